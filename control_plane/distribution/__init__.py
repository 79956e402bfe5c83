"""Table distribution to the routers: the per-region versioned cache, the follower that fills it from etcd, and the
gRPC stream with its pure session."""
