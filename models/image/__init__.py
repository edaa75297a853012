"""The image representation: whole-frame codecs (the baseline NAIR is measured against; the sensor's image mode)."""
