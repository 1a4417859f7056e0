"""`sharewall inject` and `inject_pod`: every kind, both captures, both sidecar styles; each output
validated against the Kubernetes 1.29 and 1.33 schemas."""

from __future__ import annotations

import argparse
import copy
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_schemas import assert_valid

from injector import InjectionError, InjectorConfig, inject_pod
from injector.manifests import POD_TEMPLATE_PATHS, inject_document, inject_text
from sharewall.cli import main

REPO = Path(__file__).resolve().parents[2]
SHAREWALL = Path(sys.executable).parent / "sharewall"

POD_SPEC = {
    "initContainers": [
        {"name": "migrate", "image": "example/migrate:1", "args": ["up"]},
    ],
    "containers": [
        {
            "name": "app",
            "image": "example/app:1",
            "env": [{"name": "LOG_LEVEL", "value": "info"}],
            "ports": [{"containerPort": 8080}],
        },
        {"name": "worker", "image": "example/app:1", "args": ["worker"]},
    ],
}


def _template(labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"labels": labels or {"app.kubernetes.io/name": "sms-gateway"}},
        "spec": copy.deepcopy(POD_SPEC),
    }


def _workload(kind: str) -> dict[str, Any]:
    selector = {"matchLabels": {"app.kubernetes.io/name": "sms-gateway"}}
    meta = {"name": "sms-gateway", "namespace": "messaging"}
    template = _template()
    if kind == "Pod":
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {**meta, **template["metadata"]},
            "spec": template["spec"],
        }
    if kind in ("Job", "CronJob"):
        template["spec"]["restartPolicy"] = "OnFailure"
    job = {"template": template}
    specs = {
        "Deployment": ("apps/v1", {"selector": selector, "template": template}),
        "StatefulSet": (
            "apps/v1",
            {"selector": selector, "serviceName": "sms", "template": template},
        ),
        "DaemonSet": ("apps/v1", {"selector": selector, "template": template}),
        "ReplicaSet": ("apps/v1", {"selector": selector, "template": template}),
        "ReplicationController": (
            "v1",
            {"selector": selector["matchLabels"], "template": template},
        ),
        "Job": ("batch/v1", job),
        "CronJob": ("batch/v1", {"schedule": "*/5 * * * *", "jobTemplate": {"spec": job}}),
    }
    api_version, spec = specs[kind]
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": spec}


def _pod_of(doc: dict[str, Any]) -> dict[str, Any]:
    node = doc
    for key in POD_TEMPLATE_PATHS[doc["kind"]]:
        node = node[key]
    return node


def _containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = pod["spec"]
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


TLS = {"caSecret": "sharewall-ca", "appTrustBundle": {"configMap": "sharewall-trust"}}
SETTINGS = {
    "proxy-env native": {},
    "proxy-env classic": {"native": False},
    "transparent native": {
        "capture": "transparent",
        "transparent": {"excludeCIDRs": ["10.96.0.0/12"]},
    },
    "transparent classic": {"capture": "transparent", "native": False},
    "transparent dual-stack": {
        "capture": "transparent",
        "transparent": {"excludeCIDRs": ["10.96.0.0/12", "fd00:10:96::/112"], "ipv6": True},
    },
    "intercepting, registry file": {"tls": TLS, "registry": {"fileConfigMap": "registry-yaml"}},
}


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
@pytest.mark.parametrize("kind", POD_TEMPLATE_PATHS)
def test_every_kind_injected_validates_in_1_29_and_1_33(kind: str, settings: dict) -> None:
    doc = _workload(kind)
    assert_valid(doc)
    out = inject_document(doc, InjectorConfig().with_overrides(settings))
    assert_valid(out)
    pod = _pod_of(out)
    assert pod["metadata"]["labels"]["sharewall.io/egress-proxy"] == "true"
    assert "sharewall.io/status" in pod["metadata"]["annotations"]
    assert "sharewall-proxy" in _containers(pod)


def test_native_sidecar_is_an_init_container_ready_before_the_app_init_containers() -> None:
    pod = inject_pod(_template(), InjectorConfig()).pod
    names = [c["name"] for c in pod["spec"]["initContainers"]]
    assert names == ["sharewall-proxy", "migrate"]
    proxy = pod["spec"]["initContainers"][0]
    assert proxy["restartPolicy"] == "Always"
    assert proxy["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app", "worker"]
    # The app init container runs after the proxy is ready: its calls go through it too.
    assert _env(_containers(pod)["migrate"])["HTTPS_PROXY"] == "http://127.0.0.1:15080"


def test_classic_sidecar_is_a_container_and_app_init_containers_get_no_proxy() -> None:
    pod = inject_pod(_template(), InjectorConfig(native=False)).pod
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["migrate"]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app", "worker", "sharewall-proxy"]
    assert "restartPolicy" not in pod["spec"]["containers"][-1]
    # The proxy does not run yet while init containers do: a proxy variable would break them.
    assert "HTTPS_PROXY" not in _env(_containers(pod)["migrate"])


def test_proxy_env_points_every_app_container_at_the_loopback_proxy() -> None:
    pod = inject_pod(_template(), InjectorConfig()).pod
    containers = _containers(pod)
    for name in ("app", "worker"):
        env = _env(containers[name])
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            assert env[var] == "http://127.0.0.1:15080"
        assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,::1,.svc,.cluster.local"
    assert _env(containers["app"])["LOG_LEVEL"] == "info"
    proxy = containers["sharewall-proxy"]
    assert "--listen=127.0.0.1:15080" in proxy["args"]
    assert "--admin-listen=0.0.0.0:15081" in proxy["args"]
    assert not any(a.startswith("--transparent-listen") for a in proxy["args"])
    assert "sharewall-capture" not in containers


def test_transparent_capture_runs_first_as_root_with_net_admin_and_the_proxy_as_1337() -> None:
    config = InjectorConfig().with_overrides(
        {
            "capture": "transparent",
            "transparent": {
                "excludeCIDRs": ["10.96.0.0/12", "10.244.0.0/16"],
                "excludePorts": [5432],
            },
        }
    )
    pod = inject_pod(_template(), config).pod
    inits = pod["spec"]["initContainers"]
    assert [c["name"] for c in inits] == ["sharewall-capture", "sharewall-proxy", "migrate"]
    capture = inits[0]
    assert capture["args"] == [
        "capture-rules",
        "--apply",
        "--proxy-uid",
        "1337",
        "--port",
        "15001",
        "--exclude-cidr",
        "10.96.0.0/12",
        "--exclude-cidr",
        "10.244.0.0/16",
        "--exclude-port",
        "5432",
    ]
    assert "restartPolicy" not in capture
    sc = capture["securityContext"]
    assert sc["runAsUser"] == 0 and sc["runAsNonRoot"] is False
    assert sorted(sc["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW"]
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["allowPrivilegeEscalation"] is False
    proxy = inits[1]
    assert proxy["securityContext"]["runAsUser"] == 1337
    assert "--transparent-listen=127.0.0.1:15001" in proxy["args"]
    # Capture, not proxy settings: the app knows nothing of sharewall.
    for name in ("app", "worker", "migrate"):
        assert not {"HTTP_PROXY", "HTTPS_PROXY", "http_proxy"} & set(_env(_containers(pod)[name]))


def test_dual_stack_capture_redirects_ipv6_to_a_proxy_listening_on_both_families(capsys) -> None:
    # ip6tables REDIRECTs the pod's IPv6 TCP to ::1: with --ipv6 rules the proxy must listen
    # there too, or every IPv6 connection of the app is redirected to a closed port.
    from proxy.proxy_cli import add_parser, settings_from_args
    from sharewall.cli import main

    settings = SETTINGS["transparent dual-stack"]
    containers = _containers(inject_pod(_template(), InjectorConfig().with_overrides(settings)).pod)
    capture = containers["sharewall-capture"]["args"]
    assert capture[-1] == "--ipv6"
    # The injected rules, printed instead of applied: the IPv6 range is accepted and redirected.
    assert main([a for a in capture if a != "--apply"]) == 0
    rules = capsys.readouterr().out
    assert "# ip6tables-restore --noflush" in rules and "-d fd00:10:96::/112 -j RETURN" in rules
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args([*containers["sharewall-proxy"]["args"], "--registry-file=x"])
    assert settings_from_args(args).transparent_listen == ("::", 15001)


def test_an_ipv6_exclusion_without_ipv6_capture_is_refused_at_injection() -> None:
    # capture-rules would exit 2 in the init container and the pod would never start.
    with pytest.raises(ValueError, match="needs ipv6"):
        InjectorConfig().with_overrides(
            {"capture": "transparent", "transparent": {"excludeCIDRs": ["fd00::/8"]}}
        )


def test_transparent_capture_refuses_an_app_running_as_the_proxy_uid() -> None:
    template = _template()
    template["spec"]["securityContext"] = {"runAsUser": 1337}
    with pytest.raises(InjectionError, match="UID 1337"):
        inject_pod(template, InjectorConfig(capture="transparent"))
    # The container's own UID wins over the pod's.
    template["spec"]["containers"][0]["securityContext"] = {"runAsUser": 1000}
    template["spec"]["containers"][1]["securityContext"] = {"runAsUser": 1000}
    template["spec"]["initContainers"][0]["securityContext"] = {"runAsUser": 1000}
    assert inject_pod(template, InjectorConfig(capture="transparent")).status == "injected"


def test_host_network_pods_are_refused() -> None:
    template = _template()
    template["spec"]["hostNetwork"] = True
    with pytest.raises(InjectionError, match="hostNetwork"):
        inject_pod(template, InjectorConfig())


def test_trust_bundle_and_ca_only_when_interception_is_on() -> None:
    bundle_only = InjectorConfig().with_overrides(
        {"tls": {"appTrustBundle": {"configMap": "trust"}}}
    )
    pod = inject_pod(_template(), bundle_only).pod
    assert "SSL_CERT_FILE" not in _env(_containers(pod)["app"])
    pod = inject_pod(_template(), InjectorConfig().with_overrides({"tls": TLS})).pod
    containers = _containers(pod)
    env = _env(containers["app"])
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
        assert env[var] == "/etc/sharewall/trust/ca-bundle.crt"
    assert {
        "name": "sharewall-trust",
        "mountPath": "/etc/sharewall/trust",
        "readOnly": True,
    } in containers["app"]["volumeMounts"]
    proxy = containers["sharewall-proxy"]
    assert "--ca-cert=/etc/sharewall/ca/tls.crt" in proxy["args"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["sharewall-ca"]["secret"]["secretName"] == "sharewall-ca"
    assert volumes["sharewall-trust"]["configMap"]["name"] == "sharewall-trust"
    # The CA key is mounted in the proxy only.
    assert not any(m["name"] == "sharewall-ca" for m in containers["app"].get("volumeMounts", []))


def test_the_proxy_alone_runs_optimized() -> None:
    # -OO: the sidecar's docstrings and asserts stay unloaded (its idle RSS); the app's
    # interpreter, if it is Python, is the app's business.
    containers = _containers(inject_pod(_template(), InjectorConfig()).pod)
    assert _env(containers["sharewall-proxy"])["PYTHONOPTIMIZE"] == "2"
    assert "PYTHONOPTIMIZE" not in _env(containers["app"])


def test_proxy_reads_its_token_from_the_secret_and_follows_the_registry() -> None:
    proxy = _containers(inject_pod(_template(), InjectorConfig()).pod)["sharewall-proxy"]
    assert "--registry-url=http://sharewall-registry.sharewall.svc:8700" in proxy["args"]
    assert not any("token" in a for a in proxy["args"])
    # A file from the Secret, mounted whole (not a subPath): kubelet updates it on rotation.
    assert "SHAREWALL_TOKEN" not in _env(proxy)
    assert _env(proxy)["SHAREWALL_TOKEN_FILE"] == "/var/run/secrets/sharewall/token"
    assert {
        "name": "sharewall-token",
        "mountPath": "/var/run/secrets/sharewall",
        "readOnly": True,
    } in proxy["volumeMounts"]
    volumes = {
        v["name"]: v for v in inject_pod(_template(), InjectorConfig()).pod["spec"]["volumes"]
    }
    assert volumes["sharewall-token"]["secret"] == {
        "secretName": "sharewall-registry-tokens",
        "items": [{"key": "proxy", "path": "token"}],
        "defaultMode": 0o444,
    }
    assert _env(proxy)["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    mounts = {m["mountPath"] for m in proxy["volumeMounts"]}
    assert {"/var/spool/sharewall", "/tmp"} <= mounts
    assert proxy["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(
    ("labels", "workload", "expected"),
    [
        pytest.param(
            {"app.kubernetes.io/name": "sms"},
            "x",
            {"fieldRef": {"fieldPath": "metadata.labels['app.kubernetes.io/name']"}},
            id="app.kubernetes.io/name label",
        ),
        pytest.param(
            {"app": "sms"},
            None,
            {"fieldRef": {"fieldPath": "metadata.labels['app']"}},
            id="app label",
        ),
        pytest.param({"tier": "x"}, "sms-gateway", "sms-gateway", id="workload name"),
        pytest.param(
            {"tier": "x"}, None, {"fieldRef": {"fieldPath": "metadata.name"}}, id="pod name"
        ),
    ],
)
def test_source_identity_from_the_downward_api(labels, workload, expected) -> None:
    pod = inject_pod(_template(labels), InjectorConfig(), workload=workload).pod
    assert _env(_containers(pod)["sharewall-proxy"])["SHAREWALL_SOURCE"] == expected


def test_a_deployment_pod_without_app_label_is_named_after_its_deployment() -> None:
    pod = _template({"pod-template-hash": "7d9c8b6f5d"})
    pod["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "sms-gateway-7d9c8b6f5d",
            "uid": "u",
            "controller": True,
        }
    ]
    proxy = _containers(inject_pod(pod, InjectorConfig()).pod)["sharewall-proxy"]
    assert _env(proxy)["SHAREWALL_SOURCE"] == "sms-gateway"


def test_injection_is_idempotent_and_leaves_its_input_alone() -> None:
    for config in (InjectorConfig(), InjectorConfig(capture="transparent", native=False)):
        template = _template()
        original = copy.deepcopy(template)
        once = inject_pod(template, config)
        assert template == original
        twice = inject_pod(once.pod, config)
        assert twice.status == "already-injected"
        assert twice.pod == once.pod


def test_a_pod_injected_by_the_helm_templates_is_left_alone() -> None:
    template = _template()
    template["spec"]["containers"].append({"name": "sharewall-proxy", "image": "x"})
    result = inject_pod(template, InjectorConfig())
    assert result.status == "already-injected" and result.pod == template


@pytest.mark.parametrize("where", ["annotations", "labels"])
def test_an_opted_out_pod_is_left_alone(where: str) -> None:
    template = _template()
    template["metadata"][where] = {"sharewall.io/inject": "false"}
    result = inject_pod(template, InjectorConfig())
    assert result.status == "opted-out" and result.pod == template


def test_annotations_override_purpose_mode_capture_and_resources() -> None:
    template = _template()
    template["metadata"]["annotations"] = {
        "sharewall.io/purpose": "billing",
        "sharewall.io/mode": "report",
        "sharewall.io/capture": "transparent",
        "sharewall.io/native-sidecar": "false",
        "sharewall.io/proxy-cpu": "200m",
        "sharewall.io/proxy-memory": "96Mi",
        "sharewall.io/proxy-cpu-limit": "1",
        "sharewall.io/proxy-memory-limit": "512Mi",
    }
    pod = inject_pod(template, InjectorConfig()).pod
    containers = _containers(pod)
    proxy = containers["sharewall-proxy"]
    assert proxy in pod["spec"]["containers"]  # classic
    assert "--default-purpose=billing" in proxy["args"]
    assert "--mode=report" in proxy["args"]
    assert "sharewall-capture" in containers
    assert proxy["resources"] == {
        "requests": {"cpu": "200m", "memory": "96Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }


@pytest.mark.parametrize(
    ("annotation", "value", "message"),
    [
        ("sharewall.io/mode", "audit", "sharewall.io/mode"),
        ("sharewall.io/capture", "ebpf", "sharewall.io/capture"),
        ("sharewall.io/proxy-memory", "lots", "not a resource quantity"),
        ("sharewall.io/purpos", "billing", "unknown annotation sharewall.io/purpos"),
    ],
)
def test_a_bad_annotation_is_refused_by_name(annotation: str, value: str, message: str) -> None:
    template = _template()
    template["metadata"]["annotations"] = {annotation: value}
    with pytest.raises(InjectionError, match=message):
        inject_pod(template, InjectorConfig())


def test_the_apps_own_proxy_variables_are_replaced_with_a_warning() -> None:
    template = _template()
    template["spec"]["containers"][0]["env"].append(
        {"name": "HTTPS_PROXY", "value": "http://corp-proxy:3128"}
    )
    result = inject_pod(template, InjectorConfig())
    env = result.pod["spec"]["containers"][0]["env"]
    assert [e["value"] for e in env if e["name"] == "HTTPS_PROXY"] == ["http://127.0.0.1:15080"]
    assert result.warnings == ("container app: HTTPS_PROXY replaced by the sharewall sidecar's",)


def test_a_classic_sidecar_in_a_job_pod_comes_with_a_warning() -> None:
    job = inject_document(_workload("Job"), InjectorConfig(native=False))
    assert_valid(job)
    template = _template()
    template["spec"]["restartPolicy"] = "Never"
    warnings = inject_pod(template, InjectorConfig(native=False)).warnings
    assert warnings and "never completes" in warnings[0]
    assert inject_pod(template, InjectorConfig()).warnings == ()


def test_other_kinds_pass_through_unchanged() -> None:
    text = yaml.safe_dump_all(
        [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "s"},
                "spec": {"ports": [{"port": 80}]},
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "c"},
                "data": {"a": "true"},
            },
        ]
    )
    out, report = inject_text(text, InjectorConfig())
    assert list(yaml.safe_load_all(out)) == list(yaml.safe_load_all(text))
    assert report.counts == {"passed-through": 2}


def test_a_list_is_injected_item_by_item() -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": [_workload("Deployment"), _workload("Job")]}
    out = inject_document(doc, InjectorConfig())
    for item in out["items"]:
        assert_valid(item)
        assert "sharewall-proxy" in _containers(_pod_of(item))


# -- the command ---------------------------------------------------------------------------------


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SHAREWALL), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_inject_reads_stdin_and_prints_every_document() -> None:
    docs = [
        _workload("Deployment"),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "messaging"}},
    ]
    result = _run(
        "inject",
        "-f",
        "-",
        "--capture",
        "transparent",
        "--exclude-cidr",
        "10.96.0.0/12",
        stdin=yaml.safe_dump_all(docs),
    )
    assert result.returncode == 0, result.stderr
    out = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in out] == ["Deployment", "Namespace"]
    assert_valid(out[0])
    assert "--exclude-cidr" in _containers(_pod_of(out[0]))["sharewall-capture"]["args"]
    assert result.stderr.strip() == "sharewall inject: 1 injected, 1 passed-through"
    again = _run("inject", "-f", "-", stdin=result.stdout)
    assert list(yaml.safe_load_all(again.stdout)) == out
    assert "1 already-injected" in again.stderr


def test_inject_uses_the_settings_file_of_the_chart(tmp_path: Path) -> None:
    values = yaml.safe_load((REPO / "helm" / "sharewall-injector" / "values.yaml").read_text())
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({**values["injection"], "image": "registry.example.com/sharewall:9"})
    )
    source = tmp_path / "app.yaml"
    source.write_text(yaml.safe_dump(_workload("StatefulSet")))
    out = tmp_path / "out.yaml"
    assert (
        main(["inject", "-f", str(source), "--config", str(config), "--classic", "-o", str(out)])
        == 0
    )
    pod = _pod_of(yaml.safe_load(out.read_text()))
    proxy = pod["spec"]["containers"][-1]
    assert proxy["name"] == "sharewall-proxy"
    assert proxy["image"] == "registry.example.com/sharewall:9"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["-f", "/nonexistent.yaml"], None, "/nonexistent.yaml"),
        (["-f", "-"], "kind: [unclosed", "not YAML"),
        (["-f", "-", "--exclude-cidr", "10.0.0/33"], "", "excludeCIDRs"),
        (
            ["-f", "-"],
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "p", "annotations": {"sharewall.io/mode": "x"}},
                    "spec": {"containers": [{"name": "a", "image": "b"}]},
                }
            ),
            "Pod p: annotation sharewall.io/mode",
        ),
        (
            ["-f", "-"],
            yaml.safe_dump(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "d"},
                    "spec": {},
                }
            ),
            "Deployment d: no pod template",
        ),
    ],
    ids=["missing file", "bad yaml", "bad cidr", "bad annotation", "no template"],
)
def test_inject_mistakes_are_one_line_and_exit_2(args, stdin, message, monkeypatch, capsys) -> None:
    _one_line_exit_2(args, stdin, message, monkeypatch, capsys)


_POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"containers": ["app"]}, "spec.containers is not a list of mappings"),
        ({"containers": [{"name": "a", "env": {"A": "1"}}]}, "spec.containers[0].env"),
        ({"containers": [], "volumes": "x"}, "spec.volumes"),
        ({"containers": [], "securityContext": 1337}, "spec.securityContext"),
        ("a pod", "no spec.containers"),
    ],
)
def test_a_malformed_pod_is_one_line_and_exit_2(spec, message, monkeypatch, capsys) -> None:
    _one_line_exit_2(
        ["-f", "-"], yaml.safe_dump({**_POD, "spec": spec}), message, monkeypatch, capsys
    )


def _one_line_exit_2(args, stdin, message, monkeypatch, capsys) -> None:
    # In process (the root command's start-up is seconds on a busy machine); one subprocess
    # run above proves the console script itself.
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
    assert main(["inject", *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


# -- the examples --------------------------------------------------------------------------------

EXAMPLES = sorted((REPO / "examples" / "k8s").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_and_their_injected_form_validate(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    for doc in docs:
        assert_valid(doc)
    for config in (InjectorConfig(), InjectorConfig(capture="transparent", native=False)):
        out, report = inject_text(path.read_text(), config)
        assert report.counts["injected"] >= 1
        for doc in yaml.safe_load_all(out):
            assert_valid(doc)


def test_there_are_examples() -> None:
    assert EXAMPLES


# -- the injected command lines are ones the sharewall commands accept --------------------------


def _accepts(argv: list[str]) -> bool:
    from sharewall.cli import build_parser

    try:
        build_parser().parse_args(argv)
    except SystemExit:
        return False
    return True


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_the_injected_commands_parse_with_the_real_cli(settings: dict) -> None:
    config = InjectorConfig().with_overrides(settings)
    containers = _containers(inject_pod(_template(), config).pod)
    if "sharewall-capture" in containers:
        capture_args = containers["sharewall-capture"]["args"]
        assert _accepts(capture_args), capture_args
    proxy_args = containers["sharewall-proxy"]["args"]
    probe = ["proxy", "--transparent-listen=127.0.0.1:1", "--registry-file=x"]
    if config.capture == "transparent" and not _accepts(probe):
        pytest.skip("sharewall proxy has no --transparent-listen yet (issue 8 §2)")
    assert _accepts(proxy_args), proxy_args
