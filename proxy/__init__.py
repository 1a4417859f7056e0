"""sharewall egress sidecar: listener, recipient resolution, inspection, decisions, upstream."""
