"""A server that speaks Toxiproxy's HTTP API and proxies TCP with Toxiproxy's toxics.

Used when no real `toxiproxy-server` is on PATH; `launcher.start_toxiproxy` picks one or the other.
"""
