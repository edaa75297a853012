"""NAIR on the bus: the sensor agent (head, transform, importance-ordered prefix sized to the link), the fusion
agent (reassembly by deadline, fill, inverse transform, tail), link fitting and the auto mode's tables."""
