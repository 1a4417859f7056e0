"""The admission webhook as the API server meets it: a real `sharewall injector serve` process over
TLS, fed AdmissionReview documents written as the API server sends them (tests/data/injector)."""

from __future__ import annotations

import base64
import copy
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest
import trustme
from kube_schemas import assert_valid

from injector import InjectorConfig, inject_pod
from injector.webhook import review

DATA = Path(__file__).resolve().parents[1] / "data" / "injector"
SHAREWALL = Path(sys.executable).parent / "sharewall"


def _trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def _review(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


@dataclass
class Webhook:
    url: str
    ca: Path
    stdout: Path
    proc: subprocess.Popen[bytes]

    def post(self, body: bytes | dict[str, Any]) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        with httpx.Client(verify=_trusting(self.ca), timeout=10) as client:
            return client.post(
                f"{self.url}/mutate", content=content, headers={"Content-Type": "application/json"}
            )

    def answer(self, body: bytes | dict[str, Any]) -> dict[str, Any]:
        resp = self.post(body)
        # Whatever the input, the API server gets an AdmissionReview, never an HTTP error.
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"].startswith("application/json")
        answer = resp.json()
        assert answer["apiVersion"] == "admission.k8s.io/v1"
        assert answer["kind"] == "AdmissionReview"
        return answer["response"]

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.stdout.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines


def _write_pair(ca: trustme.CA, directory: Path) -> tuple[Path, Path]:
    leaf = ca.issue_cert("127.0.0.1", "sharewall-injector.sharewall.svc")
    cert, key = directory / "tls.crt", directory / "tls.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return cert, key


def _start(tmp: Path, *extra: str) -> Iterator[Webhook]:
    ca = trustme.CA()
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert, key = _write_pair(ca, tmp)
    port_file, stdout = tmp / "port.json", tmp / "stdout.log"
    cmd = [
        str(SHAREWALL), "injector", "serve", "--tls-cert", str(cert), "--tls-key", str(key),
        "--listen", "127.0.0.1:0", "--port-file", str(port_file), *extra,
    ]  # fmt: skip
    with stdout.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            assert proc.poll() is None, stdout.read_text()
            assert time.monotonic() < deadline, "injector did not start"
            time.sleep(0.05)
        port = json.loads(port_file.read_text())["listen"]
        yield Webhook(f"https://127.0.0.1:{port}", ca_file, stdout, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    yield from _start(tmp_path_factory.mktemp("webhook"))


def _patched(review_doc: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    return jsonpatch.apply_patch(review_doc["request"]["object"], patch)


def _containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = pod["spec"]
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# -- the four reviews ----------------------------------------------------------------------------


def test_a_deployments_pod_gets_the_same_pod_as_inject(webhook: Webhook) -> None:
    doc = _review("deployment-pod.json")
    response = webhook.answer(doc)
    assert response["uid"] == doc["request"]["uid"]
    assert response["allowed"] is True
    pod = _patched(doc, response)
    assert pod == inject_pod(doc["request"]["object"], InjectorConfig()).pod
    assert_valid(pod)
    proxy = pod["spec"]["initContainers"][0]
    assert proxy["name"] == "sharewall-proxy" and proxy["restartPolicy"] == "Always"
    assert _env(proxy)["SHAREWALL_SOURCE"] == {
        "fieldRef": {"fieldPath": "metadata.labels['app.kubernetes.io/name']"}
    }
    assert _env(pod["spec"]["containers"][0])["HTTPS_PROXY"] == "http://127.0.0.1:15080"
    assert pod["metadata"]["labels"]["sharewall.io/egress-proxy"] == "true"
    # The generated name is left to the API server.
    assert "name" not in pod["metadata"]
    assert "warnings" not in response


def test_a_pod_with_an_init_container_gets_the_proxy_before_it(webhook: Webhook) -> None:
    doc = _review("existing-init-container.json")
    response = webhook.answer(doc)
    assert response["allowed"] is True and response["uid"] == doc["request"]["uid"]
    pod = _patched(doc, response)
    assert_valid(pod)
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["sharewall-proxy", "fetch-rates"]
    proxy = pod["spec"]["initContainers"][0]
    # Per-pod annotations: purpose and memory limit.
    assert "--default-purpose=billing" in proxy["args"]
    assert proxy["resources"]["limits"]["memory"] == "384Mi"
    # The init container's call to Stripe goes through the proxy, which is ready before it.
    assert _env(_containers(pod)["fetch-rates"])["HTTPS_PROXY"] == "http://127.0.0.1:15080"
    # The app's own corporate proxy setting would route around the sidecar: replaced, and said.
    assert _env(_containers(pod)["sync"])["HTTPS_PROXY"] == "http://127.0.0.1:15080"
    assert response["warnings"] == [
        "container sync: HTTPS_PROXY replaced by the sharewall sidecar's"
    ]


@pytest.mark.parametrize("name", ["already-injected.json", "opted-out.json"])
def test_injected_and_opted_out_pods_are_admitted_unchanged(webhook: Webhook, name: str) -> None:
    doc = _review(name)
    assert_valid(doc["request"]["object"])
    response = webhook.answer(doc)
    assert response == {"uid": doc["request"]["uid"], "allowed": True}


def test_each_review_is_logged_with_its_outcome(webhook: Webhook) -> None:
    doc = _review("opted-out.json")
    webhook.answer(doc)
    deadline = time.monotonic() + 10
    while True:
        lines = [
            line
            for line in webhook.log_lines()
            if line.get("event") == "injector.review" and line.get("uid") == doc["request"]["uid"]
        ]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert lines and lines[-1]["outcome"] == "opted-out"
    assert lines[-1]["namespace"] == "support" and lines[-1]["pod"] == "support-probe"
    assert lines[-1]["allowed"] is True and isinstance(lines[-1]["ms"], float)


# -- what is not injected, and what cannot be read -------------------------------------------------


def test_a_pod_with_a_bad_annotation_is_denied_by_name(webhook: Webhook) -> None:
    doc = _review("deployment-pod.json")
    doc["request"]["object"]["metadata"]["annotations"] = {"sharewall.io/capture": "ebpf"}
    response = webhook.answer(doc)
    assert response["uid"] == doc["request"]["uid"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert "sharewall.io/capture" in response["status"]["message"]


@pytest.mark.parametrize(
    ("change", "outcome"),
    [
        ({"operation": "UPDATE"}, "not-a-create"),
        ({"kind": {"group": "apps", "version": "v1", "kind": "Deployment"}}, "not-a-pod"),
    ],
)
def test_other_requests_are_admitted_unchanged(webhook: Webhook, change, outcome) -> None:
    doc = _review("deployment-pod.json")
    doc["request"].update(change)
    assert webhook.answer(doc) == {"uid": doc["request"]["uid"], "allowed": True}


def _with(path: list[str], value: Any) -> dict[str, Any]:
    doc = _review("deployment-pod.json")
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


_DELETE = object()
MALFORMED = {
    "not JSON": b"{not json",
    "empty body": b"",
    "a JSON list": b"[]",
    "v1beta1 review": json.dumps(_with(["apiVersion"], "admission.k8s.io/v1beta1")).encode(),
    "no request": json.dumps(_with(["request"], _DELETE)).encode(),
    "no uid": json.dumps(_with(["request", "uid"], _DELETE)).encode(),
    "object not a pod": json.dumps(_with(["request", "object"], "pod")).encode(),
    "spec without containers": json.dumps(_with(["request", "object", "spec"], {})).encode(),
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_review_is_denied_with_a_reason_never_a_500(webhook: Webhook, body) -> None:
    response = webhook.answer(body)
    assert response["allowed"] is False
    assert response["status"]["code"] in (400, 403)
    assert response["status"]["message"].startswith("sharewall injector: ")
    # And the webhook still serves.
    assert webhook.post(_review("opted-out.json")).status_code == 200


def test_an_oversized_review_is_denied(webhook: Webhook) -> None:
    doc = _review("deployment-pod.json")
    doc["request"]["object"]["metadata"]["annotations"] = {"x": "a" * (5 * 1024 * 1024)}
    response = webhook.answer(doc)
    assert response["allowed"] is False and response["status"]["code"] == 413


def test_healthz(webhook: Webhook) -> None:
    with httpx.Client(verify=_trusting(webhook.ca)) as client:
        resp = client.get(f"{webhook.url}/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


# -- settings and certificates ---------------------------------------------------------------------


def test_transparent_capture_from_the_settings(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("capture: transparent\ntransparent:\n  excludeCIDRs: [10.96.0.0/12]\n")
    for hook in _start(tmp_path, "--config", str(config)):
        doc = _review("deployment-pod.json")
        pod = _patched(doc, hook.answer(doc))
        assert_valid(pod)
        inits = pod["spec"]["initContainers"]
        assert [c["name"] for c in inits] == ["sharewall-capture", "sharewall-proxy"]
        assert "--transparent-listen=127.0.0.1:15001" in inits[1]["args"]
        assert "HTTPS_PROXY" not in _env(pod["spec"]["containers"][0])


def test_a_rotated_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    for hook in _start(tmp_path, "--cert-reload-interval", "0.1"):
        new_ca = trustme.CA()
        new_ca_file = tmp_path / "new-ca.pem"
        new_ca.cert_pem.write_to_path(str(new_ca_file))
        staging = tmp_path / "staging"
        staging.mkdir()
        cert, key = _write_pair(new_ca, staging)
        # The kubelet swaps a Secret volume's files atomically (a symlink flip); rename is as atomic.
        os.replace(key, tmp_path / "tls.key")
        os.replace(cert, tmp_path / "tls.crt")
        deadline = time.monotonic() + 20
        while True:
            try:
                with httpx.Client(verify=_trusting(new_ca_file)) as client:
                    assert client.get(f"{hook.url}/healthz").status_code == 200
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the new certificate was never served"
                time.sleep(0.1)


def test_serve_mistakes_are_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(SHAREWALL), "injector", "serve", "--tls-cert", str(tmp_path / "missing.crt"),
         "--tls-key", str(tmp_path / "missing.key"), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.crt" in lines[0], result.stderr


# -- the patch, in process, for every setting ------------------------------------------------------

SETTINGS = {
    "proxy-env native": {},
    "proxy-env classic": {"native": False},
    "transparent native": {"capture": "transparent"},
    "transparent classic, intercepting": {
        "capture": "transparent",
        "native": False,
        "tls": {"caSecret": "ca", "appTrustBundle": {"configMap": "trust"}},
    },
}


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
@pytest.mark.parametrize("name", ["deployment-pod.json", "existing-init-container.json"])
def test_the_patch_applied_is_the_injected_pod(name: str, settings: dict) -> None:
    config = InjectorConfig().with_overrides(settings)
    doc = _review(name)
    original = copy.deepcopy(doc["request"]["object"])
    answer, _ = review(json.dumps(doc).encode(), config)
    pod = _patched(doc, answer["response"])
    assert doc["request"]["object"] == original
    assert pod == inject_pod(original, config).pod
    assert_valid(pod)
