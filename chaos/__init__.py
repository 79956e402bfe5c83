"""Chaos: a Toxiproxy-compatible fault proxy and scenarios that break a running stack under load."""
