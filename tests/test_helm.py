"""Static checks of the Helm charts (no helm binary here): YAML parses, templates are consistent.

What this catches: a values key renamed in values.yaml but not in a template (Helm would render
an empty string silently), an `include` of a template that does not exist, a missing `{{ end }}`.
What it cannot: whether the rendered manifests are valid Kubernetes objects (run `helm lint` and
`helm template | kubeconform` in CI where helm exists).
"""

from __future__ import annotations

import re
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
