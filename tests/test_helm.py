"""Static checks of the Helm charts (no helm binary here): YAML parses, templates are consistent.

What this catches: a values key renamed in values.yaml but not in a template (Helm would render
an empty string silently), an `include` of a template that does not exist, a missing `{{ end }}`.
What it cannot: whether the rendered manifests are valid Kubernetes objects (run `helm lint` and
`helm template | kubeconform` in CI where helm exists).
"""

from __future__ import annotations

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
