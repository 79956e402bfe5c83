"""The routing table on the router: the validated snapshot, its copy on disk, and the subscription that keeps it
current with its pure sync session."""
