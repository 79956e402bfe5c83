"""Drives and watches a running stack: the realistic load, the probes, the stack handle that injects faults, the
timeline every run records, and its plots. The demo, chaos and the benches all use it."""
