"""A request's path once parsed: route planning, the attempt plan, forwarding and relaying, the outcome applied,
usage, and the response cache."""
