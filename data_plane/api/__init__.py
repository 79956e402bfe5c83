"""The router's HTTP surface: the OpenAI-compatible and operator endpoints, request parsing, authentication and
OpenAI-shaped errors."""
