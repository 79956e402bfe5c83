"""Leader election on etcd: the pure election state machine, the campaign that drives it, and the lease session
under both."""
