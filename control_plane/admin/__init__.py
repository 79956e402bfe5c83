"""The admin API: the operations, their HTTP and gRPC transports, the cluster status, and the client the CLI, the
demo and the benches call it with."""
