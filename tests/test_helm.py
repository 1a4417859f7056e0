"""The Helm charts without a helm binary: static checks, and renders through tests/helm_render.py.

Static: YAML parses, every `.Values.x.y` a template uses exists in `values.yaml`, every value
helm/README.md names exists, blocks are closed, every `include` is defined. Rendered (a Go
template interpreter with the functions the charts use, `lookup` finding nothing as in `helm
template`): every object of several value sets validates against the Kubernetes 1.29 and 1.33
schemas, the command lines parse with the real `sharewall` CLI, and the include templates give
the same sidecar as the injector. Still worth running `helm lint` and `helm template |
kubeconform` where helm exists: this interpreter is not Helm.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

HELM = Path(__file__).resolve().parents[1] / "helm"
CHARTS = sorted(p.parent for p in HELM.glob("*/Chart.yaml"))

_VALUES_REF_RE = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
_ACTION_RE = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)
_BLOCK_OPENERS = ("if ", "with ", "range ", "define ", "block ")
_DEFINE_RE = re.compile(r'\{\{-?\s*define\s+"([^"]+)"')
_INCLUDE_RE = re.compile(r'(?:include|template)\s+"([^"]+)"')


def _templates(chart: Path) -> list[Path]:
    return sorted(p for p in (chart / "templates").iterdir() if p.is_file())


def _has_path(values: Any, path: list[str]) -> bool:
    for key in path:
        if not isinstance(values, dict) or key not in values:
            return False
        values = values[key]
    return True


def test_there_are_charts() -> None:
    assert {c.name for c in CHARTS} >= {"sharewall-registry", "sharewall-sidecar"}


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.name)
def test_chart_and_values_parse(chart: Path) -> None:
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == chart.name
    assert re.match(r"^\d+\.\d+\.\d+", str(meta["version"]))
    assert isinstance(yaml.safe_load((chart / "values.yaml").read_text()), dict)


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.name)
def test_templates_reference_only_existing_values(chart: Path) -> None:
    values = yaml.safe_load((chart / "values.yaml").read_text())
    missing = {
        f"{template.name}: .Values{ref}"
        for template in _templates(chart)
        for ref in _VALUES_REF_RE.findall(template.read_text())
        if not _has_path(values, ref.strip(".").split("."))
    }
    assert not missing, sorted(missing)


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.name)
def test_template_blocks_are_balanced(chart: Path) -> None:
    for template in _templates(chart):
        depth = 0
        for action in _ACTION_RE.findall(template.read_text()):
            if action.startswith("/*"):
                continue
            if action.startswith(_BLOCK_OPENERS):
                depth += 1
            elif action == "end":
                depth -= 1
                assert depth >= 0, f"{template.name}: unexpected {{{{ end }}}}"
        assert depth == 0, f"{template.name}: {depth} block(s) not closed"


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.name)
def test_included_templates_are_defined(chart: Path) -> None:
    texts = [t.read_text() for t in _templates(chart)]
    defined = {name for text in texts for name in _DEFINE_RE.findall(text)}
    used = {name for text in texts for name in _INCLUDE_RE.findall(text)}
    assert used <= defined, sorted(used - defined)


def test_proxy_forward_port_is_on_loopback_in_the_sidecar() -> None:
    # An app pod's proxy on the pod IP would be an open proxy for the whole cluster.
    sidecar = (HELM / "sharewall-sidecar" / "templates" / "_sidecar.tpl").read_text()
    assert '--listen={{ .listenHost | default "127.0.0.1" }}' in sidecar
    gateway = (HELM / "sharewall-sidecar" / "templates" / "gateway.yaml").read_text()
    assert '"listenHost" "0.0.0.0"' in gateway


# -- values the README documents, images, the injector chart ---------------------------------------

README = HELM / "README.md"
# `a.b.c` or `a.b.*` in backquotes: a value path (`sharewall.io/inject` has a slash: a label).
_DOCUMENTED_RE = re.compile(
    r"`([a-z][A-Za-z0-9]*(?:\.(?:[A-Za-z][A-Za-z0-9]*|\*))+)(?:(?:=|:\s)[^`]*)?`"
)


def _values(chart: str) -> dict[str, Any]:
    return yaml.safe_load((HELM / chart / "values.yaml").read_text())


def test_every_value_the_readme_documents_exists() -> None:
    charts = {c.name: yaml.safe_load((c / "values.yaml").read_text()) for c in CHARTS}
    documented = set(_DOCUMENTED_RE.findall(README.read_text()))
    assert len(documented) > 10  # the pattern still finds the README's values
    missing = []
    for ref in sorted(documented):
        path = [p for p in ref.split(".") if p != "*"]
        owners = [values for values in charts.values() if path[0] in values]
        if not owners:
            continue  # not a value path (a file name, a Python module)
        if not any(_has_path(values, path) for values in owners):
            missing.append(ref)
    assert not missing, missing


def test_charts_point_at_the_neutral_image_of_their_app_version() -> None:
    project = tomllib.loads((HELM.parent / "pyproject.toml").read_text())["project"]
    for chart in CHARTS:
        meta = yaml.safe_load((chart / "Chart.yaml").read_text())
        assert meta["appVersion"] == project["version"], chart.name
        text = (chart / "values.yaml").read_text() + "".join(
            t.read_text() for t in _templates(chart)
        )
        assert "ghcr.io/example" not in text
    assert _values("sharewall-registry")["image"] == {
        "repository": "sharewall/sharewall", "tag": "", "pullPolicy": "IfNotPresent"
    }  # fmt: skip
    assert _values("sharewall-injector")["image"]["repository"] == "sharewall/sharewall"
    sidecar_image = _values("sharewall-sidecar")["sidecar"]["proxy"]["image"]
    # Included from other charts, the sidecar templates cannot see this chart's appVersion.
    assert sidecar_image["repository"] == "sharewall/sharewall"
    assert sidecar_image["tag"] == project["version"]


def test_the_injector_chart_renders_settings_the_injector_accepts() -> None:
    from injector.config import load_config_data

    values = _values("sharewall-injector")
    config = load_config_data({**values["injection"], "image": "sharewall/sharewall:0.1.0"})
    assert config.capture == "proxy-env" and config.native
    template = (HELM / "sharewall-injector" / "templates" / "configmap.yaml").read_text()
    assert "{{- toYaml .Values.injection | nindent 4 }}" in template
    # The sidecar chart's transparent settings are the injector's, key for key.
    sidecar = _values("sharewall-sidecar")["sidecar"]
    assert sidecar["transparent"].keys() == values["injection"]["transparent"].keys()
    assert sidecar["capture"] == values["injection"]["capture"]


def test_the_webhook_configuration_fails_closed_and_spares_its_own_namespace() -> None:
    text = (
        HELM / "sharewall-injector" / "templates" / "mutatingwebhookconfiguration.yaml"
    ).read_text()
    webhook = _values("sharewall-injector")["webhook"]
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["reinvocationPolicy"] in ("Never", "IfNeeded")
    for line in (
        "admissionReviewVersions: [v1]",
        "sideEffects: None",
        "failurePolicy: {{ $.Values.webhook.failurePolicy }}",
        "reinvocationPolicy: {{ $.Values.webhook.reinvocationPolicy }}",
        "path: /mutate",
        "- operations: [CREATE]",
        "resources: [pods]",
        "key: kubernetes.io/metadata.name",
        "operator: NotIn",
        "caBundle: {{ . }}",
    ):
        assert line in text, line
    assert "concat (list .Release.Namespace) .Values.webhook.excludeNamespaces" in text
    helpers = (HELM / "sharewall-injector" / "templates" / "_helpers.tpl").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace .Values.webhook.tls.secretName' in helpers
    deployment = (HELM / "sharewall-injector" / "templates" / "deployment.yaml").read_text()
    assert 'sharewall.io/inject: "false"' in deployment


# -- command lines: the charts' args, filled from values.yaml, parse with the real CLI -------------

_SIMPLE_ACTION_RE = re.compile(r"\{\{\s*\.Values((?:\.[A-Za-z0-9_]+)+)\s*\}\}")


def _args_of(template: Path, container: str) -> list[str]:
    """The `args:` list of one container of a template, `{{ .Values.x }}` filled from values.yaml
    (lines with other template actions are left out)."""
    values = yaml.safe_load((template.parents[1] / "values.yaml").read_text())
    lines = template.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"- name: {container}")
    args_at = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("args:"))
    inline = lines[args_at].split("args:", 1)[1].strip()
    if inline:
        return yaml.safe_load(inline)
    indent = len(lines[args_at + 1]) - len(lines[args_at + 1].lstrip())
    args = []
    for line in lines[args_at + 1 :]:
        stripped = line.strip()
        if stripped and len(line) - len(line.lstrip()) < indent:
            break
        if not stripped.startswith("- "):
            continue

        def fill(match: re.Match[str]) -> str:
            node: Any = values
            for key in match.group(1).strip(".").split("."):
                node = node[key]
            return str(node)

        item = _SIMPLE_ACTION_RE.sub(fill, stripped[2:])
        if "{{" not in item:
            args.append(item)
    return args


def _parses(argv: list[str]) -> None:
    from sharewall.cli import build_parser

    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's way of saying no
        raise AssertionError(f"sharewall {' '.join(argv)}: rejected") from exc


def test_the_injector_deployment_command_line_parses() -> None:
    args = _args_of(HELM / "sharewall-injector" / "templates" / "deployment.yaml", "injector")
    assert args[:2] == ["injector", "serve"]
    assert "--listen=0.0.0.0:9443" in args
    _parses(args)


def test_the_registry_command_lines_parse() -> None:
    template = HELM / "sharewall-registry" / "templates" / "deployment.yaml"
    serve = _args_of(template, "registry")
    assert serve[:2] == ["registry", "serve"]
    _parses([a.replace("{{ .Values.service.port }}", "8700") for a in serve])
    _parses(_args_of(template, "apply-registry-file"))


# -- rendered: the charts through tests/helm_render.py, every object validated on 1.29 and 1.33 --

from helm_render import Renderer, merge  # noqa: E402
from kube_schemas import assert_valid  # noqa: E402

RENDER_CASES = {
    "sharewall-registry": {
        "defaults": {},
        "registry file applied at start": {
            "registryFile": {"content": "recipients: []\n", "applyOnStart": True}
        },
        "postgres from a secret": {
            "database": {"existingSecret": "db"},
            "replicaCount": 2,
            "networkPolicy": {
                "databaseEgress": [
                    {"to": [{"ipBlock": {"cidr": "10.0.0.5/32"}}], "ports": [{"port": 5432}]}
                ]
            },
        },
    },
    "sharewall-injector": {
        "defaults": {},
        "ca bundle, transparent, one replica": {
            "replicaCount": 1,
            "webhook": {"tls": {"caBundle": "Q0E="}},
            "injection": {
                "capture": "transparent",
                "transparent": {"excludeCIDRs": ["10.96.0.0/12"]},
            },
        },
        "cert-manager": {"webhook": {"tls": {"certManagerInjectFrom": "sharewall/injector-cert"}}},
    },
    "sharewall-sidecar": {
        "defaults": {},
        "example, native, proxy-env, tls": {
            "example": {"enabled": True},
            "sidecar": {"tls": {"caSecret": "ca", "appTrustBundle": {"configMap": "trust"}}},
        },
        "example, native, transparent": {
            "example": {"enabled": True},
            "sidecar": {
                "capture": "transparent",
                "transparent": {"excludeCIDRs": ["10.96.0.0/12"], "excludePorts": [5432]},
            },
        },
        "example, classic, transparent, opa": {
            "example": {"enabled": True},
            "sidecar": {"native": False, "capture": "transparent", "opa": {"enabled": True}},
        },
        "gateway, registry file": {
            "gateway": {"enabled": True},
            "registry": {"file": "recipients: []\n"},
        },
        "gateway, client certificates": {
            "gateway": {"enabled": True, "clientTLS": {"secret": "gateway-tls"}},
        },
        "example, native, transparent, dual-stack": {
            "example": {"enabled": True},
            "sidecar": {
                "capture": "transparent",
                "transparent": {"excludeCIDRs": ["10.96.0.0/12", "fd00:10:96::/112"], "ipv6": True},
            },
        },
        "gateway with workers, sidecar with workers": {
            "example": {"enabled": True},
            "gateway": {"enabled": True, "workers": "auto"},
            "sidecar": {"proxy": {"workers": 2}},
        },
    },
}


def _render(chart: str, case: str, release: str = "sharewall") -> list[dict[str, Any]]:
    values = merge(_values(chart), RENDER_CASES[chart][case])
    return Renderer(HELM / chart, release=release).manifests(values)


@pytest.mark.parametrize(
    ("chart", "case"),
    [(chart, case) for chart, cases in RENDER_CASES.items() for case in cases],
)
def test_rendered_objects_validate_in_1_29_and_1_33(chart: str, case: str) -> None:
    manifests = _render(chart, case)
    assert manifests
    for manifest in manifests:
        assert_valid(manifest)


def _pod(manifests: list[dict[str, Any]], name: str) -> dict[str, Any]:
    deployment = next(
        m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"].endswith(name)
    )
    return deployment["spec"]["template"]


def test_the_gateway_takes_its_clients_workloads_from_their_certificates() -> None:
    from proxy.proxy_cli import add_parser, settings_from_args

    plain = _pod(_render("sharewall-sidecar", "gateway, registry file"), "sharewall-gateway")
    assert not any(a.startswith("--client-ca") for a in plain["spec"]["containers"][0]["args"])
    pod = _pod(_render("sharewall-sidecar", "gateway, client certificates"), "sharewall-gateway")
    [proxy] = [c for c in pod["spec"]["containers"] if c["name"] == "sharewall-proxy"]
    # What the proxy makes of the rendered command line (and environment): a TLS listener that
    # requires client certificates, with no fixed source of its own.
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    settings = settings_from_args(parser.parse_args(proxy["args"]))
    assert settings.client_ca is not None and settings.tls_cert is not None
    assert settings.source_workload is None and settings.listen[0] == "0.0.0.0"
    # The three files come from the Secret, mounted where the flags point.
    [mount] = [m for m in proxy["volumeMounts"] if m["name"] == "sharewall-gateway-tls"]
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == "sharewall-gateway-tls"]
    assert volume["secret"]["secretName"] == "gateway-tls"
    for path in (settings.client_ca, settings.tls_cert, settings.tls_key):
        assert str(path.parent) == mount["mountPath"]
    assert settings.client_ca.name == "ca.crt"
    # App pods' sidecars are not gateways: they never get the flags.
    example = _pod(_render("sharewall-sidecar", "example, native, proxy-env, tls"), "example")
    sidecar = [c for c in example["spec"]["initContainers"] if c["name"] == "sharewall-proxy"]
    assert not any(a.startswith("--client-ca") for a in sidecar[0]["args"])


def test_objects_are_named_after_a_release_that_names_the_chart() -> None:
    names = {
        m["metadata"]["name"]
        for m in _render("sharewall-injector", "defaults", release="sharewall-injector")
    }
    assert names == {"sharewall-injector"}
    names = {
        m["metadata"]["name"]
        for m in _render("sharewall-registry", "defaults", release="sharewall-registry")
    }
    # The sidecar's default registry URL names this Service.
    assert "sharewall-registry" in names
    assert _values("sharewall-sidecar")["registry"]["url"].startswith(
        "http://sharewall-registry.sharewall.svc"
    )


def test_the_rendered_injector_settings_and_command_are_accepted() -> None:
    from injector.config import load_config_data

    for case in RENDER_CASES["sharewall-injector"]:
        manifests = _render("sharewall-injector", case)
        config_map = next(m for m in manifests if m["kind"] == "ConfigMap")
        config = load_config_data(yaml.safe_load(config_map["data"]["config.yaml"]))
        assert config.image == "sharewall/sharewall:0.1.0"
        args = _pod(manifests, "injector")["spec"]["containers"][0]["args"]
        _parses(args)


def test_the_webhook_without_a_ca_bundle_renders_none_and_with_one_both_webhooks_carry_it() -> None:
    mwc = next(
        m
        for m in _render("sharewall-injector", "defaults")
        if m["kind"] == "MutatingWebhookConfiguration"
    )
    assert all("caBundle" not in w["clientConfig"] for w in mwc["webhooks"])
    mwc = next(
        m
        for m in _render("sharewall-injector", "ca bundle, transparent, one replica")
        if m["kind"] == "MutatingWebhookConfiguration"
    )
    assert [w["name"] for w in mwc["webhooks"]] == [
        "namespace.inject.sharewall.io",
        "object.inject.sharewall.io",
    ]
    for hook in mwc["webhooks"]:
        assert hook["clientConfig"]["caBundle"] == "Q0E="
        assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
        excluded = hook["namespaceSelector"]["matchExpressions"][1]
        assert excluded["operator"] == "NotIn" and "sharewall" in excluded["values"]
    cert_manager = next(
        m
        for m in _render("sharewall-injector", "cert-manager")
        if m["kind"] == "MutatingWebhookConfiguration"
    )
    assert cert_manager["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "sharewall/injector-cert"
    }


def _accepts(argv: list[str]) -> bool:
    try:
        _parses(argv)
    except AssertionError:
        return False
    return True


@pytest.mark.parametrize(
    "case",
    [
        "example, native, proxy-env, tls",
        "example, native, transparent",
        "example, classic, transparent, opa",
        "example, native, transparent, dual-stack",
    ],
)
def test_the_include_templates_give_the_injectors_sidecar(case: str) -> None:
    from injector import InjectorConfig, inject_pod

    pod = _pod(_render("sharewall-sidecar", case), "example")
    sidecar = merge(
        _values("sharewall-sidecar")["sidecar"], RENDER_CASES["sharewall-sidecar"][case]["sidecar"]
    )
    config = InjectorConfig().with_overrides(
        {
            "capture": sidecar["capture"],
            "native": sidecar["native"],
            "transparent": sidecar["transparent"],
            "tls": sidecar["tls"],
            "image": "sharewall/sharewall:0.1.0",
        }
    )
    injected = inject_pod(
        {
            "metadata": {"labels": {"app.kubernetes.io/name": "x"}},
            "spec": {"containers": [{"name": "app", "image": "x"}]},
        },
        config,
    ).pod

    def containers(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
        spec = p["spec"]
        return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}

    chart_c, inject_c = containers(pod), containers(injected)

    # Same containers in the same places, same command lines, same env names.
    def names(p: dict[str, Any], key: str) -> list[str]:
        return [c["name"] for c in p["spec"].get(key, []) if c["name"] != "sharewall-opa"]

    assert names(pod, "initContainers") == names(injected, "initContainers")
    for name in ("sharewall-proxy", "sharewall-capture"):
        if name not in inject_c:
            assert name not in chart_c
            continue
        chart_args = [
            a for a in chart_c[name]["args"] if not a.startswith(("--engine", "--opa-url"))
        ]
        assert chart_args == inject_c[name]["args"]
        assert {e["name"] for e in chart_c[name]["env"]} == {
            e["name"] for e in inject_c[name]["env"]
        }
    assert {e["name"] for e in chart_c["app"].get("env") or []} == {
        e["name"] for e in inject_c["app"].get("env") or []
    }
    if "sharewall-capture" in chart_c:
        assert _accepts(chart_c["sharewall-capture"]["args"])
    if sidecar["capture"] != "transparent" or _accepts(
        ["proxy", "--transparent-listen=127.0.0.1:1", "--registry-file=x"]
    ):
        assert _accepts(chart_c["sharewall-proxy"]["args"])


def test_the_workers_value_reaches_the_proxy_command_line() -> None:
    def proxy_args(pod: dict[str, Any]) -> list[str]:
        spec = pod["spec"]
        containers = spec.get("initContainers", []) + spec["containers"]
        return next(c for c in containers if c["name"] == "sharewall-proxy")["args"]

    defaults = _render("sharewall-sidecar", "gateway, registry file")
    assert not [a for a in proxy_args(_pod(defaults, "gateway")) if a.startswith("--workers")]
    manifests = _render("sharewall-sidecar", "gateway with workers, sidecar with workers")
    gateway, app = proxy_args(_pod(manifests, "gateway")), proxy_args(_pod(manifests, "example"))
    assert "--workers=auto" in gateway
    assert "--workers=2" in app
    assert _accepts(gateway) and _accepts(app)


def test_the_sidecar_reads_its_token_from_the_mounted_secret_file() -> None:
    pod = _pod(_render("sharewall-sidecar", "example, native, proxy-env, tls"), "example")
    spec = pod["spec"]
    [proxy] = [c for c in spec["initContainers"] if c["name"] == "sharewall-proxy"]
    env = {e["name"]: e for e in proxy["env"]}
    # Not an env var (fixed at start) but the Secret's file, which kubelet keeps current.
    assert "SHAREWALL_TOKEN" not in env and not any("token" in a for a in proxy["args"])
    token_file = env["SHAREWALL_TOKEN_FILE"]["value"]
    [mount] = [m for m in proxy["volumeMounts"] if m["name"] == "sharewall-token"]
    assert "subPath" not in mount and mount["readOnly"] is True  # a subPath is never updated
    assert token_file == f"{mount['mountPath']}/token"
    [volume] = [v for v in spec["volumes"] if v["name"] == "sharewall-token"]
    values = _values("sharewall-sidecar")["registry"]["tokenSecret"]
    assert volume["secret"]["secretName"] == values["name"]
    assert volume["secret"]["items"] == [{"key": values["key"], "path": "token"}]
    # The registry-file mode has no token at all.
    plain = _pod(_render("sharewall-sidecar", "gateway, registry file"), "sharewall-gateway")
    assert not [v for v in plain["spec"]["volumes"] if v["name"] == "sharewall-token"]


def test_opa_reads_its_token_from_the_mounted_secret_file_at_each_request() -> None:
    manifests = _render("sharewall-sidecar", "example, classic, transparent, opa")
    spec = _pod(manifests, "example")["spec"]
    [opa] = [c for c in spec["containers"] if c["name"] == "sharewall-opa"]
    # No env var (fixed at start, a rotation would need a restart): the file kubelet updates.
    assert not [e for e in opa.get("env", []) if "TOKEN" in e["name"]]
    [mount] = [m for m in opa["volumeMounts"] if m["name"] == "sharewall-token"]
    assert "subPath" not in mount and mount["readOnly"] is True
    [config_map] = [m for m in manifests if m["metadata"]["name"] == "sharewall-sharewall-opa"]
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    bearer = config["services"]["registry"]["credentials"]["bearer"]
    assert bearer == {"token_path": f"{mount['mountPath']}/token"}
