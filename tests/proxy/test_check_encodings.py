"""Encoded personal data through `sharewall check` (issue 7 §1): each encoding is found and denied.

The affiliate `qwiqi-marketing` may receive e-mail and name for marketing: a phone number in
any encoding is `MOBILE_INFO_FOR_MARKETING`, an SMS opt-in record `SMS_CONSENT_TO_THIRD_PARTY`.
The command runs in process (`sharewall.cli.main`, the console script's entry point) so that
the table stays cheap; `test_check_cli.py` runs the same entry point as a subprocess.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import structlog

from proxy.check import check_call
from proxy.decide import Decider
from proxy.engines import create_engine
from sharewall.cli import main
from sharewall.recipients import RecipientIndex
from sharewall.registry_file import load_registry_file

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "registry.yaml"
AFFILIATE = "https://api.qwiqi-promo.example/v1/leads"
PHONE_DOC = orjson.dumps({"phone": "+6591234567"})
JSON = ("Content-Type: application/json",)
FORM = ("Content-Type: application/x-www-form-urlencoded",)
PHONE = "contact.phone_number"
MOBILE_MARKETING = "MOBILE_INFO_FOR_MARKETING"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(claims: dict) -> str:
    header = b64url(b'{"alg":"HS256","typ":"JWT"}')
    return f"{header}.{b64url(orjson.dumps(claims))}.c2lnbmF0dXJl"


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def pb(number: int, value: str) -> bytes:
    data = value.encode()
    return bytes([number << 3 | 2, len(data)]) + data


@pytest.fixture
def quiet_structlog() -> Iterator[None]:
    # `sharewall check` configures structlog for its own process; give the next test its own.
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def run_check(tmp_path: Path, capsysbinary, url: str, headers, body: bytes, purpose: str):
    data = tmp_path / "body.bin"
    data.write_bytes(body)
    args = ["check", "--registry-file", str(SAMPLE), "--purpose", purpose]
    for header in headers:
        args += ["--header", header]
    code = main([*args, "--data", f"@{data}", "POST", url])
    out = capsysbinary.readouterr().out
    return code, orjson.loads(out)


ROWS = [
    pytest.param(
        JSON,
        orjson.dumps({"data": b64(PHONE_DOC)}),
        AFFILIATE,
        PHONE,
        MOBILE_MARKETING,
        id="base64 json in a field",
    ),
    pytest.param(
        JSON,
        b64(PHONE_DOC).encode(),
        AFFILIATE,
        PHONE,
        MOBILE_MARKETING,
        id="base64 json as the whole body",
    ),
    pytest.param(
        JSON,
        orjson.dumps({"d": b64url(PHONE_DOC)}),
        AFFILIATE,
        PHONE,
        MOBILE_MARKETING,
        id="base64url in a field",
    ),
    pytest.param(
        JSON,
        orjson.dumps({"lead": jwt({"phone_number": "+6591234567"})}),
        AFFILIATE,
        PHONE,
        MOBILE_MARKETING,
        id="jwt payload in a field",
    ),
    pytest.param(
        (*JSON, "Authorization: Bearer " + jwt({"phone_number": "+6591234567"})),
        b"{}",
        AFFILIATE,
        PHONE,
        MOBILE_MARKETING,
        id="jwt payload in authorization bearer",
    ),
    pytest.param(
        FORM,
        b"email=a%40b.example&phone=%252B6591234567",
        AFFILIATE,
        PHONE,
        MOBILE_MARKETING,
        id="form percent-encoded twice",
    ),
    pytest.param(
        (),
        b"",
        AFFILIATE + "?phone=%252B6591234567",
        PHONE,
        MOBILE_MARKETING,
        id="query percent-encoded twice",
    ),
    pytest.param(
        JSON,
        gzip.compress(PHONE_DOC),
        AFFILIATE,
        PHONE,
        MOBILE_MARKETING,
        id="gzip without content-encoding",
    ),
    pytest.param(
        ("Content-Type: application/octet-stream",),
        raw_deflate(PHONE_DOC),
        AFFILIATE,
        PHONE,
        MOBILE_MARKETING,
        id="raw deflate without content-encoding",
    ),
    pytest.param(
        JSON,
        orjson.dumps({"note": "+65\u200b9123\u200b4567"}),
        AFFILIATE,
        PHONE,
        MOBILE_MARKETING,
        id="zero-width characters between the digits",
    ),
    pytest.param(
        JSON,
        orjson.dumps({"cc": "+65", "num": "91234567"}),
        AFFILIATE,
        PHONE,
        MOBILE_MARKETING,
        id="split: cc and num",
    ),
    pytest.param(
        JSON,
        orjson.dumps({"a": "+65 9123", "b": "4567"}),
        AFFILIATE,
        PHONE,
        MOBILE_MARKETING,
        id="split: number cut in two",
    ),
    pytest.param(
        JSON,
        orjson.dumps({"query": 'mutation { addLead(notes: "call 6591234567") { id } }'}),
        AFFILIATE,
        PHONE,
        MOBILE_MARKETING,
        id="graphql query string, international without plus",
    ),
    pytest.param(
        JSON,
        orjson.dumps({"query": 'mutation { addLead(notes: "call 9123 4567") { id } }'}),
        AFFILIATE,
        PHONE,
        MOBILE_MARKETING,
        id="graphql query string, national number",
    ),
    pytest.param(
        ("Content-Type: application/x-protobuf",),
        pb(1, "Mei") + pb(2, "6591234567"),
        AFFILIATE,
        PHONE,
        MOBILE_MARKETING,
        id="protobuf field",
    ),
    pytest.param(
        JSON,
        orjson.dumps({"contact": "006591234567"}),
        AFFILIATE,
        PHONE,
        MOBILE_MARKETING,
        id="00 prefix under a neutral key",
    ),
    pytest.param(
        (*JSON, "Cookie: qp_lead=%2B6591234567"),
        b"{}",
        AFFILIATE,
        PHONE,
        MOBILE_MARKETING,
        id="cookie",
    ),
    pytest.param(
        JSON,
        orjson.dumps({"c": b64(orjson.dumps({"msisdn": "6591234567", "sms_opt_in": True}))}),
        AFFILIATE,
        "mobile.sms_consent",
        "SMS_CONSENT_TO_THIRD_PARTY",
        id="sms opt-in record inside base64",
    ),
]


@pytest.mark.parametrize(("headers", "body", "url", "category", "code"), ROWS)
def test_each_encoding_is_denied_by_check(
    tmp_path, capsysbinary, quiet_structlog, headers, body, url, category, code
):
    exit_code, decision = run_check(tmp_path, capsysbinary, url, headers, body, "marketing")
    assert exit_code == 3, decision
    assert decision["action"] == "deny"
    assert category in decision["categories"]
    assert code in {r["code"] for r in decision["reasons"]}
    assert decision["fault"] is None


def test_vonage_sms_with_its_credentials_in_the_form_is_allowed(
    tmp_path, capsysbinary, quiet_structlog
):
    body = b"api_key=a1b2c3d4&api_secret=Zx9Qw2Er7Ty1Ui3O&from=QWIQI&to=6591234567&text=Hello"
    exit_code, decision = run_check(
        tmp_path, capsysbinary, "https://rest.nexmo.com/sms/json", FORM, body, "service_delivery"
    )
    assert exit_code == 0, decision
    assert "credentials.secret" not in decision["categories"]
    assert set(decision["categories"]) == {PHONE, "comms.content"}


def test_our_aws_key_to_vonage_is_still_a_secret(tmp_path, capsysbinary, quiet_structlog):
    body = b"api_key=AKIAIOSFODNN7EXAMPLE&api_secret=x&to=6591234567&text=Hello"
    exit_code, decision = run_check(
        tmp_path, capsysbinary, "https://rest.nexmo.com/sms/json", FORM, body, "service_delivery"
    )
    assert exit_code == 3, decision
    assert "credentials.secret" in decision["categories"]


class _BrokenMediaType(str):
    """A Content-Type that fails when the inspector parses it: a bug inside inspection."""

    def split(self, *args: object, **kwargs: object) -> list[str]:
        raise RuntimeError("+6591234567")


def test_an_inspector_error_is_a_fault_not_a_policy_denial():
    async def decide():
        snapshot = load_registry_file(SAMPLE)
        engine = create_engine("embedded")
        try:
            decider = Decider(engine)
            assert await decider.set_snapshot(snapshot)
            return await check_call(
                decider,
                RecipientIndex(snapshot),
                method="POST",
                url=AFFILIATE,
                headers=[("Content-Type", _BrokenMediaType("application/json"))],
                body=PHONE_DOC,
                purpose="marketing",
            )
        finally:
            await engine.close()

    decision = asyncio.run(decide())
    assert decision.fault == "inspector_error"
    assert decision.unavailable and not decision.allow
    assert decision.reasons == ()  # not INSPECTION_INCOMPLETE: nothing the app did wrong
    assert decision.as_dict()["fault"] == "inspector_error"


def test_the_superscript_phone_of_the_report_is_decided_without_a_fault(
    tmp_path, capsysbinary, quiet_structlog
):
    body = '{"phone":"²²²1234567"}'.encode()
    exit_code, decision = run_check(tmp_path, capsysbinary, AFFILIATE, JSON, body, "marketing")
    assert decision["fault"] is None
    assert decision["inspection"]["problems"] == []
    assert exit_code == 0, decision
