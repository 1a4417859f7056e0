"""sharewall's shared contract: what the proxy and the registry agree on.

The taxonomy, the snapshot schema, the registry file, logging setup and the root `sharewall`
command live here. Both `proxy` and `registry` import this package; neither imports the other,
and nothing here imports either of them at module level (the root command loads each
subcommand module lazily).
"""
