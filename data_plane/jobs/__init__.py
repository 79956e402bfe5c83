"""Asynchronous jobs: the pure state machine, the Redis store, the worker, the callbacks and the endpoints."""
