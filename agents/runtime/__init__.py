"""The runtime every agent shares: the MQTT communicator, settings and configuration, structured logging, systemd
notify, the service runner, the fair inbox, the private Mosquitto, the paced loop and the fusion agents' base."""
