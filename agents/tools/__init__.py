"""Tools around the product: the end-to-end demo, the link and fault benchmarks (network namespaces), the wire
evaluation and the README renderer."""
