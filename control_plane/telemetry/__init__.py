"""The routers' telemetry: read from the regions' Redis streams and merged per deployment."""
