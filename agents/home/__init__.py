"""What the bus offers people and home automation: Home Assistant discovery and the results watcher."""
