"""The Mosquitto configurations nairbus ships: a development config, a production config with its ACL, and the
scripts that make users and test certificates. Installed as package data, so a private broker (tests, the demo,
the benchmarks) finds them whether nairbus runs from a checkout or from ``pip install nairbus``."""

from pathlib import Path

BROKER_DIR = Path(__file__).resolve().parent
"""Where the shipped broker files are."""
