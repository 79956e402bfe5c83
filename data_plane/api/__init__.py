"""The router's HTTP surface: the OpenAI-compatible endpoints, the operator endpoints and the regions directory."""
