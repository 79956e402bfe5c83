"""The regional router: serves /v1/* from a local snapshot of its region's routing table."""
