"""Sidecar injection: `sharewall inject` for manifests and the admission webhook for pods.

Imports only the shared contract layer (`sharewall/`), never the proxy or the registry.
"""

from injector.config import InjectionError, InjectorConfig, config_for_pod, load_config
from injector.pod import Injection, inject_pod, is_injected

__all__ = [
    "Injection",
    "InjectionError",
    "InjectorConfig",
    "config_for_pod",
    "inject_pod",
    "is_injected",
    "load_config",
]
