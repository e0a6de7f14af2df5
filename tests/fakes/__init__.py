"""Fakes with the real interfaces: an HTTP Kubernetes API server and the cluster CLIs."""
