"""Data sets: the registry of data sets by name and the Fashion-MNIST loader."""
