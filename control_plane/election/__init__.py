"""Leader election on etcd: the pure election state machine, the campaign that drives it, the lease session
under both, and the identity a leader publishes in its key."""
