"""Variant Parallelism on the bus: the VP sensor agent (one variant, top-k out), the VP fusion agent (whichever
variants reported, fused), and the capture agent that publishes each frame once for every variant."""
