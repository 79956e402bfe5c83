"""Policy documents: parsed and checked, stored in etcd with their history, and resolved into the policy each
region applies."""
