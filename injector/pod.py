"""The one place a pod gains its sidecar: `inject_pod` turns a pod (or pod template) into the
injected one. `sharewall inject` prints its result; the admission webhook answers with the JSON
Patch from the original to it, so both paths always produce the same pod.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from injector.config import (
    EGRESS_PROXY_LABEL,
    INJECT,
    STATUS,
    InjectionError,
    InjectorConfig,
    config_for_pod,
    version,
)

PROXY = "sharewall-proxy"
CAPTURE = "sharewall-capture"
SPOOL_DIR = "/var/spool/sharewall"
TRUST_DIR = "/etc/sharewall/trust"
REGISTRY_FILE_DIR = "/etc/sharewall/registry"
CA_DIR = "/etc/sharewall/ca"
TOKEN_DIR = "/var/run/secrets/sharewall"  # noqa: S105 (a directory, not a secret)
VOLUMES = (
    "sharewall-spool",
    "sharewall-tmp",
    "sharewall-registry-file",
    "sharewall-token",
    "sharewall-ca",
    "sharewall-trust",
)
# Where the capture init container's iptables takes its lock (the root filesystem is read-only).
# /tmp is the pod's own emptyDir (sharewall-tmp), not a shared host directory.
TMP_DIR = "/tmp"  # noqa: S108
XTABLES_LOCKFILE = f"{TMP_DIR}/xtables.lock"

Status = Literal["injected", "already-injected", "opted-out"]


@dataclass(frozen=True, slots=True)
class Injection:
    """The outcome for one pod: the pod as it should be, and why it is (or is not) changed."""

    pod: dict[str, Any]
    status: Status
    # What the pod's author should know (a container setting replaced); shown by kubectl.
    warnings: tuple[str, ...] = ()


def is_injected(pod: dict[str, Any]) -> bool:
    """True when the pod already carries the sidecar (annotated, or a container named for it)."""
    meta = pod.get("metadata") or {}
    if STATUS in (meta.get("annotations") or {}):
        return True
    spec = pod.get("spec") or {}
    names = {
        c.get("name") for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
    }
    return PROXY in names


def is_opted_out(pod: dict[str, Any]) -> bool:
    """True when the pod says `sharewall.io/inject: "false"` (annotation or label)."""
    meta = pod.get("metadata") or {}
    return "false" in (
        str((meta.get("annotations") or {}).get(INJECT, "")).lower(),
        str((meta.get("labels") or {}).get(INJECT, "")).lower(),
    )


def workload_name(meta: dict[str, Any]) -> str | None:
    """The name of the workload that owns a pod, from its owner reference (webhook pods have no
    name of their own yet): a Deployment's ReplicaSet loses its pod-template-hash suffix."""
    refs = meta.get("ownerReferences")
    for ref in refs if isinstance(refs, list) else []:
        if not isinstance(ref, dict) or not ref.get("controller"):
            continue
        name = str(ref.get("name") or "")
        suffix = (meta.get("labels") or {}).get("pod-template-hash")
        if ref.get("kind") == "ReplicaSet" and suffix and name.endswith(f"-{suffix}"):
            return name.removesuffix(f"-{suffix}")
        return name or None
    return None


def inject_pod(
    pod: dict[str, Any], config: InjectorConfig, *, workload: str | None = None
) -> Injection:
    """Return `pod` (a Pod or a PodTemplateSpec: `metadata` + `spec`) with the sidecar added.

    `workload` names the source when the pod has no app label (defaults to its owner, then to
    the pod's own name through the downward API). The input is never modified. Raises
    `InjectionError` for a pod that cannot carry the sidecar (the message says why).
    """
    _check_shape(pod)
    if is_opted_out(pod):
        return Injection(pod, "opted-out")
    if is_injected(pod):
        return Injection(pod, "already-injected")
    try:
        out = orjson.loads(orjson.dumps(pod))  # a deep copy, ~10x faster than copy.deepcopy
    except orjson.JSONEncodeError as exc:
        raise InjectionError(f"the pod is not a JSON document: {exc}") from None
    meta = out.get("metadata") or {}
    out["metadata"] = meta
    spec = out["spec"]
    config = config_for_pod(config, meta.get("annotations") or {})
    _check_pod(spec, config)

    source = _source_env(meta, workload or workload_name(meta))
    containers = spec["containers"]
    inits = spec.get("initContainers") or []
    ours: list[dict[str, Any]] = []
    if config.capture == "transparent":
        ours.append(_capture_container(config))
    proxy = _proxy_container(config, source)
    if config.native:
        proxy["restartPolicy"] = "Always"
        ours.append(proxy)
    # Ours first: the rules are in place and the proxy is ready before any app init container
    # runs, so their calls are decided too (and never reach a port nobody listens on).
    apps = list(containers) + (list(inits) if config.native else [])
    if ours:
        spec["initContainers"] = ours + list(inits)
    if not config.native:
        containers.append(proxy)
    warnings: list[str] = []
    if not config.native and spec.get("restartPolicy") in ("Never", "OnFailure"):
        # A Job's pod completes when its containers exit; a classic sidecar never does.
        warnings.append(
            f"restartPolicy {spec['restartPolicy']}: the classic sidecar never exits, so the pod "
            "never completes; use the native sidecar (Kubernetes >= 1.29)"
        )
    for container in apps:
        warnings += _add_app_settings(container, config)
    spec["volumes"] = list(spec.get("volumes") or []) + _volumes(config)

    meta["labels"] = {**(meta.get("labels") or {}), EGRESS_PROXY_LABEL: "true"}
    status = {
        "version": version(),
        "capture": config.capture,
        "native": config.native,
        "mode": config.mode,
    }
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        STATUS: json.dumps(status, separators=(",", ":")),
    }
    return Injection(out, "injected", tuple(warnings))


def _is_map(value: Any) -> bool:
    return isinstance(value, dict)


def _is_list_of_maps(value: Any) -> bool:
    return value is None or (isinstance(value, list) and all(isinstance(v, dict) for v in value))


def _check_shape(pod: Any) -> None:
    """Refuse what is not shaped like a pod where injection reads or writes (a manifest typed by
    hand can be anything): each problem named by its path."""
    if not _is_map(pod):
        raise InjectionError("the pod is not a mapping")
    meta = pod.get("metadata")
    if meta is not None and not _is_map(meta):
        raise InjectionError("metadata is not a mapping")
    for key in ("labels", "annotations"):
        value = (meta or {}).get(key)
        if value is not None and not _is_map(value):
            raise InjectionError(f"metadata.{key} is not a mapping")
    spec = pod.get("spec")
    if not _is_map(spec) or not isinstance(spec.get("containers"), list):
        raise InjectionError("the pod has no spec.containers list")
    for key in ("containers", "initContainers", "volumes"):
        if not _is_list_of_maps(spec.get(key)):
            raise InjectionError(f"spec.{key} is not a list of mappings")
    if spec.get("securityContext") is not None and not _is_map(spec["securityContext"]):
        raise InjectionError("spec.securityContext is not a mapping")
    for key in ("containers", "initContainers"):
        for i, container in enumerate(spec.get(key) or []):
            for field in ("env", "volumeMounts"):
                if not _is_list_of_maps(container.get(field)):
                    raise InjectionError(f"spec.{key}[{i}].{field} is not a list of mappings")
            if container.get("securityContext") is not None and not _is_map(
                container["securityContext"]
            ):
                raise InjectionError(f"spec.{key}[{i}].securityContext is not a mapping")


def _check_pod(spec: dict[str, Any], config: InjectorConfig) -> None:
    if spec.get("hostNetwork"):
        # The proxy's ports (and with transparent capture, the rules) would land on the node.
        raise InjectionError(
            'a hostNetwork pod cannot carry the sidecar; annotate it sharewall.io/inject: "false"'
        )
    taken = {v.get("name") for v in spec.get("volumes") or []}
    clash = taken & set(VOLUMES)
    if clash:
        raise InjectionError(f"the pod already has a volume named {sorted(clash)[0]}")
    if config.capture != "transparent":
        return
    pod_uid = (spec.get("securityContext") or {}).get("runAsUser")
    for container in (spec.get("initContainers") or []) + spec["containers"]:
        uid = (container.get("securityContext") or {}).get("runAsUser", pod_uid)
        if uid == config.proxy_uid:
            # The capture rules let the proxy's UID out unchecked: an app under it escapes.
            raise InjectionError(
                f"container {container.get('name')} runs as UID {uid}, the proxy's UID, "
                "which transparent capture does not redirect"
            )


def _source_env(meta: dict[str, Any], workload: str | None) -> dict[str, Any]:
    # From the pod's own metadata (downward API), which the app container cannot change.
    labels = meta.get("labels") or {}
    for label in ("app.kubernetes.io/name", "app"):
        if label in labels:
            field = f"metadata.labels['{label}']"
            return {"name": "SHAREWALL_SOURCE", "valueFrom": {"fieldRef": {"fieldPath": field}}}
    if workload:
        return {"name": "SHAREWALL_SOURCE", "value": workload}
    return {"name": "SHAREWALL_SOURCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def _security_context(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _proxy_container(config: InjectorConfig, source: dict[str, Any]) -> dict[str, Any]:
    p = config.proxy
    args = ["proxy"]
    env: list[dict[str, Any]] = []
    mounts = [
        {"name": "sharewall-spool", "mountPath": SPOOL_DIR},
        {"name": "sharewall-tmp", "mountPath": TMP_DIR},
    ]
    if config.registry.file_config_map:
        args.append(f"--registry-file={REGISTRY_FILE_DIR}/registry.yaml")
        mounts.append(
            {"name": "sharewall-registry-file", "mountPath": REGISTRY_FILE_DIR, "readOnly": True}
        )
    else:
        # The token is read from the mounted Secret ($SHAREWALL_TOKEN_FILE), never from argv:
        # kubelet updates the file in place, and the proxy takes a rotated secret without a
        # restart. The whole volume is mounted: kubelet does not update a subPath mount.
        args.append(f"--registry-url={config.registry.url}")
        env.append({"name": "SHAREWALL_TOKEN_FILE", "value": f"{TOKEN_DIR}/token"})
        mounts.append({"name": "sharewall-token", "mountPath": TOKEN_DIR, "readOnly": True})
    args += [
        f"--listen=127.0.0.1:{p.port}",
        f"--admin-listen=0.0.0.0:{p.admin_port}",
        f"--mode={config.mode}",
    ]
    if config.default_purpose:
        args.append(f"--default-purpose={config.default_purpose}")
    if config.tls.ca_secret:
        args += [f"--ca-cert={CA_DIR}/tls.crt", f"--ca-key={CA_DIR}/tls.key"]
        mounts.append({"name": "sharewall-ca", "mountPath": CA_DIR, "readOnly": True})
    args += [f"--resolve={pin}" for pin in p.resolve]
    if config.capture == "transparent":
        # REDIRECT in the nat OUTPUT chain maps locally generated packets to 127.0.0.1, so the
        # listener needs only loopback. Istio binds its outbound listener to 0.0.0.0 because it
        # also captures inbound traffic (PREROUTING, redirected to the pod IP); we capture
        # outbound only, and on the pod IP any pod could connect to the listener directly.
        # With IPv6 rules, ip6tables REDIRECTs to ::1 and one listener must take both families:
        # `[::]` (dual-stack); a connection made to the port itself is refused by the proxy.
        host = "[::]" if config.transparent.ipv6 else "127.0.0.1"
        args.append(f"--transparent-listen={host}:{config.transparent.port}")
    env += [
        source,
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "SHAREWALL_SPOOL_DIR", "value": SPOOL_DIR},
        # `python -OO`: no docstrings nor asserts loaded, ~1 MB of every pod's sidecar (the
        # image holds the bytecode of both levels; README.md, "Container image").
        {"name": "PYTHONOPTIMIZE", "value": "2"},
    ]
    probe = {"httpGet": {"path": "/readyz", "port": "sw-admin"}}
    return {
        "name": PROXY,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": args,
        "env": env,
        "ports": [{"name": "sw-admin", "containerPort": p.admin_port, "protocol": "TCP"}],
        # Native sidecar: the app starts only once the snapshot is loaded and the engine ready.
        "startupProbe": {**probe, "periodSeconds": 1, "failureThreshold": 60},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "sw-admin"},
            "periodSeconds": 10,
        },
        "readinessProbe": {**probe, "periodSeconds": 5},
        "resources": copy.deepcopy(p.resources),
        "securityContext": _security_context(config.proxy_uid),
        "volumeMounts": mounts,
    }


def _capture_container(config: InjectorConfig) -> dict[str, Any]:
    t = config.transparent
    args = ["capture-rules", "--apply", "--proxy-uid", str(config.proxy_uid), "--port", str(t.port)]
    for cidr in t.exclude_cidrs:
        args += ["--exclude-cidr", cidr]
    for port in t.exclude_ports:
        args += ["--exclude-port", str(port)]
    if t.ipv6:
        args.append("--ipv6")
    return {
        "name": CAPTURE,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": args,
        "env": [{"name": "XTABLES_LOCKFILE", "value": XTABLES_LOCKFILE}],
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {"memory": "128Mi"},
        },
        # Root with NET_ADMIN/NET_RAW for the pod's own network namespace only, as Istio's init
        # container; it exits before the app starts.
        "securityContext": {
            "runAsNonRoot": False,
            "runAsUser": 0,
            "runAsGroup": 0,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "sharewall-tmp", "mountPath": TMP_DIR}],
    }


def _trust_bundle(config: InjectorConfig) -> str | None:
    bundle = config.tls.app_trust_bundle
    if config.tls.ca_secret and bundle.config_map:
        return f"{TRUST_DIR}/{bundle.key}"
    return None


def _add_app_settings(container: dict[str, Any], config: InjectorConfig) -> list[str]:
    env: list[dict[str, Any]] = []
    if config.capture == "proxy-env":
        # Both cases: curl and many others read only the lower-case names.
        proxy = f"http://127.0.0.1:{config.proxy.port}"
        no_proxy = ",".join(config.no_proxy)
        for name, value in (("HTTP_PROXY", proxy), ("HTTPS_PROXY", proxy), ("NO_PROXY", no_proxy)):
            env += [{"name": name, "value": value}, {"name": name.lower(), "value": value}]
    bundle = _trust_bundle(config)
    if bundle:
        # A full bundle (system roots + the CA): SSL_CERT_FILE replaces the default roots.
        for name in (
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
        ):
            env.append({"name": name, "value": bundle})
        mount = {"name": "sharewall-trust", "mountPath": TRUST_DIR, "readOnly": True}
        container["volumeMounts"] = [*(container.get("volumeMounts") or []), mount]
    if not env:
        return []
    # Ours replace the container's own values in place: an HTTPS_PROXY of the app's own would
    # route around the sidecar. The author is told (an admission warning, a line from inject).
    merged = list(container.get("env") or [])
    index = {e.get("name"): i for i, e in enumerate(merged)}
    replaced = []
    for entry in env:
        i = index.get(entry["name"])
        if i is None:
            merged.append(entry)
        elif merged[i] != entry:
            merged[i] = entry
            replaced.append(entry["name"])
    container["env"] = merged
    if not replaced:
        return []
    names = ", ".join(replaced)
    return [f"container {container.get('name')}: {names} replaced by the sharewall sidecar's"]


def _volumes(config: InjectorConfig) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        # Blocked decisions wait here to be shipped, and the last snapshot is cached here: it
        # survives container restarts, not pod deletion (the proxy drains it on SIGTERM).
        {"name": "sharewall-spool", "emptyDir": {"sizeLimit": config.proxy.spool_size_limit}},
        {"name": "sharewall-tmp", "emptyDir": {"sizeLimit": "16Mi"}},
    ]
    if config.registry.file_config_map:
        volumes.append(
            {
                "name": "sharewall-registry-file",
                "configMap": {"name": config.registry.file_config_map},
            }
        )
    else:
        # The proxy's token as a file (0444: read by 1337; only the proxy mounts it).
        secret = config.registry.token_secret
        volumes.append(
            {
                "name": "sharewall-token",
                "secret": {
                    "secretName": secret.name,
                    "items": [{"key": secret.key, "path": "token"}],
                    "defaultMode": 0o444,
                },
            }
        )
    if config.tls.ca_secret:
        # 0444: the proxy runs as 1337 and the files belong to root; only the proxy mounts it.
        volumes.append(
            {
                "name": "sharewall-ca",
                "secret": {"secretName": config.tls.ca_secret, "defaultMode": 0o444},
            }
        )
    if _trust_bundle(config):
        volumes.append(
            {
                "name": "sharewall-trust",
                "configMap": {"name": config.tls.app_trust_bundle.config_map},
            }
        )
    return volumes
