"""NAIR: the importance transform, its codec, calibration, the split pipeline, and the retrained tail-drop baseline."""
