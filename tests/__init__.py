"""nairbus test suite."""
