"""Tests of the wire contract (schemas/): fast, no broker."""
