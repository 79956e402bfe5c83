"""Regions: the topology and the launcher of a multi-region stack on one machine."""
