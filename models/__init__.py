"""nairbus models: data set, the ResNet family, training, NAIR calibration and codec. Knows nothing of MQTT."""
