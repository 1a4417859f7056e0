"""`sharewall check --source W --namespace NS`: purposes bound to workloads, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "registry.yaml"
BOUND = ROOT / "examples" / "registry-workloads.yaml"
TWILIO_URL = (
    "https://api.twilio.com/2010-04-01/Accounts/AC3f1d9b2c7e4a5f60718293a4b5c6d7e8/Messages.json"
)
TWILIO_FORM = "To=%2B6591234567&From=%2B6568001234&Body=Your+QWIQI+code+is+482913"


def check(registry: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sharewall.cli",
            "check",
            "--registry-file",
            str(registry),
            "--purpose",
            "service_delivery",
            *args,
            "--header",
            "Content-Type: application/x-www-form-urlencoded",
            "--data",
            TWILIO_FORM,
            "POST",
            TWILIO_URL,
        ],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("source", "exit_code"),
    [
        pytest.param(("sms-gateway", "messaging"), 0, id="allow: the sms gateway"),
        pytest.param(("campaign-runner", "marketing"), 3, id="deny: a marketing job"),
        pytest.param(("sms-gateway", "sandbox"), 3, id="deny: another namespace"),
    ],
)
def test_bound_registry_decides_on_the_source(source: tuple[str, str], exit_code: int) -> None:
    result = check(BOUND, "--source", source[0], "--namespace", source[1])
    assert result.returncode == exit_code, result.stderr
    decision = orjson.loads(result.stdout)
    assert decision["source"] == {"workload": source[0], "namespace": source[1]}
    assert decision["source_binding"] is True
    assert decision["workloads"] == 7
    codes = [r["code"] for r in decision["reasons"]]
    assert codes == ([] if exit_code == 0 else ["PURPOSE_NOT_ALLOWED_FOR_SOURCE"])
    assert result.stderr == b""


def test_bound_registry_without_source_denies() -> None:
    result = check(BOUND)
    assert result.returncode == 3
    decision = orjson.loads(result.stdout)
    assert decision["source"] == {"workload": None, "namespace": None}
    assert [r["code"] for r in decision["reasons"]] == ["PURPOSE_NOT_ALLOWED_FOR_SOURCE"]


def test_registry_without_workloads_says_binding_is_off() -> None:
    result = check(SAMPLE, "--source", "campaign-runner", "--namespace", "marketing")
    assert result.returncode == 0, result.stderr
    decision = orjson.loads(result.stdout)
    assert decision["source_binding"] is False
    assert decision["workloads"] == 0
    stderr = result.stderr.decode()
    assert stderr.count("\n") == 1
    assert "source binding is off" in stderr
