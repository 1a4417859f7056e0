"""sharewall registry: taxonomy, registry-as-code, snapshot schema and the registry service."""
