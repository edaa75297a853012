"""Architectures: the registry, the shipped ResNet and MobileNetV2 families, the split protocol, imported models."""
