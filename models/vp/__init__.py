"""Variant Parallelism: the variant family, its joint training and the fusion rule."""
