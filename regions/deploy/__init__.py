"""Renders the deployments of a topology (`meridian deploy compose|k8s`): the compose stack and the Kubernetes
manifests are output of this package, never edited by hand."""
