"""Offline evaluation: NAIR against its baselines, the image-codec baseline, VP, and the statistics of every report."""
