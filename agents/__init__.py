"""nairbus agents: the MQTT runtime, sensor and fusion agents, the demo and the command line."""
