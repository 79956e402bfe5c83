"""The router's telemetry: accumulated per deployment on the request path, published to Redis off it."""
