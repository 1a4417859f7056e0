"""What the injector adds to a pod: one settings value, from a YAML file, flags and pod annotations.

The YAML keys are the ones of the `injection` block of the `sharewall-injector` Helm chart's
values (camelCase), so the chart renders its values into the file the webhook reads unchanged.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

Capture = Literal["proxy-env", "transparent"]
Mode = Literal["enforce", "report"]

# Kubernetes resource quantities (apimachinery resource.Quantity): a number with an optional
# binary (Ki…Ei), decimal (n, u, m, k, M…E) or exponent suffix.
_QUANTITY_RE = re.compile(
    r"^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$"
)

ANNOTATION_PREFIX = "sharewall.io/"
INJECT = "sharewall.io/inject"
STATUS = "sharewall.io/status"
EGRESS_PROXY_LABEL = "sharewall.io/egress-proxy"


class InjectionError(ValueError):
    """A setting, annotation or pod the injector cannot use; the message names it (exit 2, or a denied review)."""


@functools.cache
def version() -> str:
    """The installed sharewall version (read once: importlib.metadata parses files each call)."""
    try:
        return metadata.version("sharewall")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "latest"


def default_image() -> str:
    """`sharewall/sharewall:<installed version>`: the image this code ships in."""
    return f"sharewall/sharewall:{version()}"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class SecretKey(_Model):
    name: str = "sharewall-registry-tokens"
    key: str = "proxy"


class Registry(_Model):
    # The registry Service the proxy follows (snapshot long poll, decision shipping).
    url: str = "http://sharewall-registry.sharewall.svc:8700"
    # Secret in the app's namespace holding a token of role `proxy`.
    token_secret: SecretKey = SecretKey()
    # Alternatively a ConfigMap in the app's namespace with `registry.yaml`: the proxy runs on the
    # file (no registry service).
    file_config_map: str = ""


def _check_quantities(value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    for section, items in value.items():
        if section not in ("requests", "limits"):
            raise ValueError(f"resources.{section}: expected requests or limits")
        for name, quantity in items.items():
            if not _QUANTITY_RE.match(str(quantity)):
                raise ValueError(f"resources.{section}.{name}: {quantity!r} is not a quantity")
    return {s: {n: str(q) for n, q in items.items()} for s, items in value.items()}


class Proxy(_Model):
    # The app reaches the forward port on loopback only (on the pod IP it would be an open proxy).
    port: int = Field(15080, ge=1, le=65535)
    # Probes and Prometheus come from outside the pod: the admin port is on the pod IP.
    admin_port: int = Field(15081, ge=1, le=65535)
    spool_size_limit: str = "256Mi"
    resolve: tuple[str, ...] = ()
    resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        }
    )

    _resources = field_validator("resources")(_check_quantities)


class Transparent(_Model):
    # Where the kernel's REDIRECT sends the pod's outbound TCP (`--transparent-listen`).
    port: int = Field(15001, ge=1, le=65535)
    # Cluster service and pod CIDRs: calls there are first-party and not redirected.
    exclude_cidrs: tuple[str, ...] = Field((), alias="excludeCIDRs")
    exclude_ports: tuple[int, ...] = ()
    # Dual-stack pods: ip6tables rules too (`capture-rules --ipv6`) and the proxy listening on
    # `[::]` (IPv4 and IPv6), else the pod's IPv6 TCP would leave uncaptured.
    ipv6: bool = False

    @model_validator(mode="after")
    def _ipv6_cidrs_need_ipv6(self) -> Transparent:
        for cidr in self.exclude_cidrs:
            if ":" in cidr and not self.ipv6:
                # capture-rules would refuse it at pod start (exit 2): say so at injection.
                raise ValueError(f"excludeCIDRs {cidr}: an IPv6 range needs ipv6: true")
        return self

    @field_validator("exclude_cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR") from None
        return value


class TrustBundle(_Model):
    # ConfigMap with a full trust bundle (system roots + the sharewall CA) for the app.
    config_map: str = ""
    key: str = "ca-bundle.crt"


class Tls(_Model):
    # Secret of type kubernetes.io/tls holding the interception CA (tls.crt, tls.key).
    ca_secret: str = ""
    app_trust_bundle: TrustBundle = TrustBundle()


class InjectorConfig(_Model):
    """Everything that decides what the sidecar looks like; per-pod annotations override a few."""

    image: str = Field(default_factory=default_image)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    registry: Registry = Registry()
    capture: Capture = "proxy-env"
    # Native sidecar (an init container with restartPolicy: Always, Kubernetes >= 1.29): ready
    # before the app starts, outlives it at shutdown. False: a plain extra container.
    native: bool = True
    mode: Mode = "enforce"
    default_purpose: str = ""
    proxy: Proxy = Proxy()
    transparent: Transparent = Transparent()
    tls: Tls = Tls()
    # Not sent through the proxy (proxy-env): the pod itself and cluster-internal names.
    no_proxy: tuple[str, ...] = ("localhost", "127.0.0.1", "::1", ".svc", ".cluster.local")
    # UID of the proxy: the capture rules let this UID out, so no app container may run as it.
    proxy_uid: int = 1337

    def with_overrides(self, overrides: dict[str, Any]) -> InjectorConfig:
        """A copy with some fields replaced (validated like the file)."""
        data = self.model_dump(by_alias=True)
        _merge(data, overrides)
        return load_config_data(data)


def _merge(into: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    return f"{where}: {first['msg']}"


def load_config_data(data: dict[str, Any]) -> InjectorConfig:
    """Validate a settings mapping (the YAML document); `InjectionError` names the bad key."""
    try:
        return InjectorConfig.model_validate(data)
    except ValidationError as exc:
        raise InjectionError(_describe(exc)) from None


def load_config(path: Path | None) -> InjectorConfig:
    """Read the injector settings file (YAML); no file gives the defaults."""
    if path is None:
        return InjectorConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InjectionError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise InjectionError(f"{path}: expected a mapping of settings")
    try:
        return load_config_data(data)
    except InjectionError as exc:
        raise InjectionError(f"{path}: {exc}") from None


# Per-pod overrides: annotation -> how it changes the settings. Documented in helm/README.md.
_BOOL = {"true": True, "false": False}


def _quantity(annotation: str, section: str, resource: str):
    def apply(value: str) -> dict[str, Any]:
        if not _QUANTITY_RE.match(value):
            raise InjectionError(f"annotation {annotation}: {value!r} is not a resource quantity")
        return {"proxy": {"resources": {section: {resource: value}}}}

    return apply


def _choice(annotation: str, key: str, choices: dict[str, Any]):
    def apply(value: str) -> dict[str, Any]:
        if value not in choices:
            allowed = ", ".join(choices)
            raise InjectionError(f"annotation {annotation}: {value!r} is not one of {allowed}")
        return {key: choices[value]}

    return apply


OVERRIDE_ANNOTATIONS = {
    "sharewall.io/purpose": lambda v: {"defaultPurpose": v},
    "sharewall.io/mode": _choice(
        "sharewall.io/mode", "mode", {"enforce": "enforce", "report": "report"}
    ),
    "sharewall.io/capture": _choice(
        "sharewall.io/capture",
        "capture",
        {"proxy-env": "proxy-env", "transparent": "transparent"},
    ),
    "sharewall.io/native-sidecar": _choice("sharewall.io/native-sidecar", "native", _BOOL),
    "sharewall.io/proxy-cpu": _quantity("sharewall.io/proxy-cpu", "requests", "cpu"),
    "sharewall.io/proxy-memory": _quantity("sharewall.io/proxy-memory", "requests", "memory"),
    "sharewall.io/proxy-cpu-limit": _quantity("sharewall.io/proxy-cpu-limit", "limits", "cpu"),
    "sharewall.io/proxy-memory-limit": _quantity(
        "sharewall.io/proxy-memory-limit", "limits", "memory"
    ),
}


def config_for_pod(config: InjectorConfig, annotations: dict[str, str]) -> InjectorConfig:
    """The settings for one pod: `config` with the pod's `sharewall.io/*` annotations applied.

    An unknown `sharewall.io/` annotation is an error (a typo would otherwise be ignored silently).
    """
    overrides: dict[str, Any] = {}
    for name, value in annotations.items():
        if not name.startswith(ANNOTATION_PREFIX) or name in (INJECT, STATUS):
            continue
        apply = OVERRIDE_ANNOTATIONS.get(name)
        if apply is None:
            known = ", ".join(sorted([INJECT, *OVERRIDE_ANNOTATIONS]))
            raise InjectionError(f"unknown annotation {name} (known: {known})")
        _merge(overrides, apply(str(value)))
    if not overrides:
        return config
    # Pods of one workload carry the same annotations: build their settings once.
    key = (id(config), repr(sorted(overrides.items())))
    cached = _POD_CONFIGS.get(key)
    if cached is not None and cached[0] is config:
        return cached[1]
    result = config.with_overrides(overrides)
    if len(_POD_CONFIGS) >= 256:
        _POD_CONFIGS.clear()
    _POD_CONFIGS[key] = (config, result)
    return result


_POD_CONFIGS: dict[tuple[int, str], tuple[InjectorConfig, InjectorConfig]] = {}
