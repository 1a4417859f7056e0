"""`sharewall check` as a user runs it: the real console entry point in a subprocess."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from proxy.check import Target, parse_target

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "registry.yaml"
AFFILIATE_URL = "https://api.qwiqi-promo.example/v1/leads"
TWILIO_URL = (
    "https://api.twilio.com/2010-04-01/Accounts/AC3f1d9b2c7e4a5f60718293a4b5c6d7e8/Messages.json"
)
TWILIO_FORM = "To=%2B6591234567&From=%2B6568001234&Body=Your+QWIQI+code+is+482913"


def sharewall(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run `sharewall ARGS...` (the console script's entry point) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "sharewall.cli", *args],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def check(*args: str, registry: Path | str = SAMPLE, purpose: str = "service_delivery"):
    return sharewall("check", "--registry-file", str(registry), "--purpose", purpose, *args)


def test_sms_opt_in_to_the_affiliate_for_marketing_exits_3_with_both_policy_reasons() -> None:
    result = check(
        "POST",
        AFFILIATE_URL,
        "--header",
        "Content-Type: application/json",
        "--data",
        '{"phone":"+6591234567","sms_opt_in":true}',
        purpose="marketing",
    )
    assert result.returncode == 3, result.stderr
    decision = orjson.loads(result.stdout)
    codes = {r["code"] for r in decision["reasons"]}
    assert {"SMS_CONSENT_TO_THIRD_PARTY", "MOBILE_INFO_FOR_MARKETING"} <= codes
    assert decision["action"] == "deny"
    assert decision["allow"] is False
    assert decision["recipient_id"] == "qwiqi-marketing"
    assert decision["purpose"] == "marketing"
    assert set(decision["categories"]) == {"contact.phone_number", "mobile.sms_consent"}
    assert len(decision["decision_id"]) >= 16
    # Where each finding was, never what it was.
    assert "+6591234567" not in result.stdout.decode()
    assert {f["location"] for f in decision["findings"]} >= {"json:$.phone"}


def test_twilio_message_send_for_service_delivery_exits_0() -> None:
    result = check(
        "POST",
        TWILIO_URL,
        "-H",
        "Content-Type: application/x-www-form-urlencoded",
        "--data",
        TWILIO_FORM,
        "--source",
        "sms-gateway",
        "--namespace",
        "messaging",
    )
    assert result.returncode == 0, result.stderr
    decision = orjson.loads(result.stdout)
    assert (decision["action"], decision["allow"], decision["reasons"]) == ("allow", True, [])
    assert decision["recipient_id"] == "twilio"
    assert set(decision["categories"]) == {"contact.phone_number", "comms.content"}


def test_body_is_read_from_a_data_file(tmp_path: Path) -> None:
    body = tmp_path / "lead.json"
    body.write_bytes(b'{"phone":"+6591234567","sms_opt_in":true}')
    result = check(
        "POST",
        AFFILIATE_URL,
        "--header",
        "Content-Type: application/json",
        "--data",
        f"@{body}",
        purpose="marketing",
    )
    assert result.returncode == 3, result.stderr
    assert "SMS_CONSENT_TO_THIRD_PARTY" in {
        r["code"] for r in orjson.loads(result.stdout)["reasons"]
    }


def test_body_is_read_from_standard_input() -> None:
    result = sharewall(
        "check",
        "--registry-file",
        str(SAMPLE),
        "--purpose",
        "marketing",
        "POST",
        AFFILIATE_URL,
        "--header",
        "Content-Type: application/json",
        "--data",
        "@-",
        stdin=b'{"email":"mei.tan@example.com","first_name":"Mei"}',
    )
    assert result.returncode == 0, result.stderr
    assert set(orjson.loads(result.stdout)["categories"]) == {"contact.email", "contact.name"}


def test_plain_http_with_personal_data_exits_3_as_cleartext() -> None:
    result = check(
        "POST",
        TWILIO_URL.replace("https://", "http://"),
        "--header",
        "Content-Type: application/x-www-form-urlencoded",
        "--data",
        TWILIO_FORM,
    )
    assert result.returncode == 3, result.stderr
    assert [r["code"] for r in orjson.loads(result.stdout)["reasons"]] == [
        "PERSONAL_DATA_IN_CLEARTEXT"
    ]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


UNKNOWN_PURPOSE_REGISTRY = """\
recipients:
  - id: acme-sms
    name: Acme SMS
    kind: ott_provider
    status: approved
    regions: [SG]
    hosts: [api.acme-sms.example]
    grants:
      - purpose: sales
        categories: [contact.phone_number]
"""


@pytest.mark.parametrize(
    ("make_registry", "extra_args", "must_mention"),
    [
        pytest.param(
            lambda tmp: tmp / "absent.yaml",
            [],
            ["absent.yaml", "no such file"],
            id="registry file does not exist",
        ),
        pytest.param(
            lambda tmp: _write(tmp, "broken.yaml", "recipients:\n  - id: [unclosed\n"),
            [],
            ["broken.yaml", "invalid YAML"],
            id="registry file is not YAML",
        ),
        pytest.param(
            lambda tmp: _write(tmp, "grants.yaml", UNKNOWN_PURPOSE_REGISTRY),
            [],
            ["grants.yaml", "acme-sms", "grants[0].purpose", "sales"],
            id="unknown purpose in a grant names file, recipient and field",
        ),
        pytest.param(
            lambda tmp: SAMPLE,
            ["--header", "Content-Type application/json"],
            ["--header", "Content-Type application/json"],
            id="header without a colon",
        ),
        pytest.param(
            lambda tmp: SAMPLE,
            ["--header", "Bad Name: x"],
            ["--header"],
            id="header name with a space",
        ),
        pytest.param(
            lambda tmp: SAMPLE,
            ["--data", "@/nonexistent/body.json"],
            ["/nonexistent/body.json"],
            id="unreadable data file",
        ),
    ],
)
def test_input_errors_exit_2_with_one_line(
    tmp_path: Path, make_registry, extra_args: list[str], must_mention: list[str]
) -> None:
    result = check("POST", TWILIO_URL, *extra_args, registry=make_registry(tmp_path))
    assert result.returncode == 2
    assert result.stdout == b""
    message = result.stderr.decode()
    assert message.endswith("\n") and message.count("\n") == 1, message
    for text in must_mention:
        assert text in message


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("ftp://api.twilio.com/x", id="not http"),
        pytest.param("api.twilio.com/2010-04-01", id="not absolute"),
        pytest.param("https://api.twilio.com:99999/x", id="port out of range"),
    ],
)
def test_bad_url_exits_2_with_one_line(url: str) -> None:
    result = check("GET", url)
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1
    assert url in result.stderr.decode()


@pytest.mark.parametrize(
    ("url", "target"),
    [
        pytest.param(
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json",
            Target("https", "api.twilio.com", 443, "/2010-04-01/Accounts/AC1/Messages.json"),
            id="https default port",
        ),
        pytest.param(
            "http://rest.nexmo.com/sms/json?to=6591234567",
            Target("http", "rest.nexmo.com", 80, "/sms/json?to=6591234567"),
            id="http default port, query kept",
        ),
        pytest.param(
            "HTTPS://API.Twilio.COM.:8443",
            Target("https", "api.twilio.com", 8443, "/"),
            id="case, trailing dot, explicit port, empty path",
        ),
        pytest.param(
            "https://[2406:3003::5]/v1",
            Target("https", "2406:3003::5", 443, "/v1"),
            id="IPv6 literal",
        ),
    ],
)
def test_url_is_split_into_what_the_policy_sees(url: str, target: Target) -> None:
    assert parse_target(url) == target


def test_missing_purpose_is_a_usage_error() -> None:
    result = sharewall("check", "--registry-file", str(SAMPLE), "GET", TWILIO_URL)
    assert result.returncode == 2
    assert b"--purpose" in result.stderr


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_opa_is_a_fault_exit_4_never_an_allow() -> None:
    result = check(
        "--engine",
        "opa",
        "--opa-url",
        f"http://127.0.0.1:{_closed_port()}",
        "--timeout",
        "0.5",
        "POST",
        TWILIO_URL,
        "-H",
        "Content-Type: application/x-www-form-urlencoded",
        "--data",
        TWILIO_FORM,
    )
    assert result.returncode == 4, result.stderr
    decision = orjson.loads(result.stdout)
    assert decision["allow"] is False
    assert decision["fault"]
