"""A recipient's own credentials where its API expects them are authentication; our secrets are not."""

from __future__ import annotations

import base64

import orjson
import pytest

from proxy.inspect import inspect_call
from proxy.inspect.model import DEFAULT_LIMITS, InspectionLimits

JSON = [("Content-Type", "application/json")]
FORM = [("Content-Type", "application/x-www-form-urlencoded")]
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
SLACK = "xoxb-2748146270-5573429113424-Qe2uWt9vFhKx3Rz8LmPa1Bc7"
GITHUB = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
STRIPE = "sk_live_51H8kLmCq4x2AbCdEfGhIjKlMnOp"
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----"
DB_URL = "postgresql://app:S3cr3tPass@db.internal.example:5432/sms"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(claims: dict) -> str:
    header = b64url(b'{"alg":"RS256"}')
    return f"{header}.{b64url(orjson.dumps(claims))}.c2lnbmF0dXJl"


def findings(url, headers, body=b"", limits=DEFAULT_LIMITS) -> set[tuple[str, str]]:
    inspection = inspect_call("POST", url, headers, body, limits=limits)
    assert inspection.complete, inspection.problems
    return {(f.category, f.location) for f in inspection.findings}


def secrets(url, headers, body=b"", limits=DEFAULT_LIMITS) -> set[str]:
    return {loc for cat, loc in findings(url, headers, body, limits) if cat == "credentials.secret"}


@pytest.mark.parametrize(
    ("url", "headers", "body"),
    [
        pytest.param(
            "https://rest.nexmo.com/sms/json",
            FORM,
            b"api_key=a1b2c3d4&api_secret=Zx9Qw2Er7Ty1Ui3O&from=QWIQI&to=6591234567&text=Hello",
            id="vonage api_key/api_secret form fields",
        ),
        pytest.param(
            "https://api.nexmo.com/ni/advanced/json?api_key=a1b2c3d4&api_secret=Zx9Qw2Er7Ty1Ui3O&number=447911123456",
            [],
            b"",
            id="vonage credentials in the query",
        ),
        pytest.param(
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json",
            [*FORM, ("Authorization", "Basic " + base64.b64encode(b"AC1:authtoken0123").decode())],
            b"To=%2B6591234567&Body=hi",
            id="basic auth",
        ),
        pytest.param(
            "https://api.partner.example/v1/send",
            [*JSON, ("Authorization", "Bearer 7f3c9a1e-4b2d-4e8f-9a6b-1c2d3e4f5a6b")],
            b"{}",
            id="opaque bearer token",
        ),
        pytest.param(
            "https://api.partner.example/v1/send",
            [
                *JSON,
                (
                    "Authorization",
                    "Bearer " + jwt({"sub": "svc-sms", "aud": "partner", "exp": 1732903600}),
                ),
            ],
            b"{}",
            id="bearer jwt without personal claims",
        ),
        pytest.param(
            "https://xk9pq2.api.infobip.com/sms/2/text/advanced",
            [
                *JSON,
                (
                    "Authorization",
                    "App 003026bbc133714df1834b8638bb496e-8f4b3d9a-e931-478d-a994-28a725159ab9",
                ),
            ],
            b"{}",
            id="infobip App key",
        ),
        pytest.param(
            "https://rest.messagebird.com/messages",
            [*JSON, ("Authorization", "AccessKey test_gshuPaZoeEG6ovbc8M79w0QyM")],
            b"{}",
            id="messagebird AccessKey",
        ),
        pytest.param(
            "https://api.brevo.com/v3/smtp/email",
            [
                *JSON,
                ("Api-Key", "xkeysib-0123456789abcdef-AbCdEfGh"),
                ("X-Acme-Api-Key", "k-9f8e7d6c"),
            ],
            b"{}",
            id="vendor key headers",
        ),
        pytest.param(
            "https://api.partner.example/v1/send",
            JSON,
            orjson.dumps({"api_key": "k-123", "api_secret": "s-456", "messages": [{"text": "hi"}]}),
            id="credentials at the top of a json body",
        ),
        pytest.param(
            "https://api.partner.example/v1/send",
            JSON,
            orjson.dumps({"auth": {"client_id": "c-1", "client_secret": "s-2"}, "data": {}}),
            id="credentials in the body's auth object",
        ),
        pytest.param(
            "https://slack.com/api/chat.postMessage",
            [*JSON, ("Authorization", "Bearer " + SLACK)],
            b'{"channel": "C1", "text": "deploy done"}',
            id="slack token to slack",
        ),
        pytest.param(
            "https://sms-archive.s3.ap-southeast-1.amazonaws.com/x",
            [
                (
                    "Authorization",
                    f"AWS4-HMAC-SHA256 Credential={AWS_KEY}/20261127/ap-southeast-1/s3/aws4_request, SignedHeaders=host, Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024",
                )
            ],
            b"",
            id="aws key id in a sigv4 header to aws",
        ),
        pytest.param(
            "https://api.stripe.com/v1/charges",
            [*FORM, ("Authorization", "Bearer " + STRIPE)],
            b"amount=500&currency=sgd",
            id="stripe key to stripe",
        ),
        pytest.param(
            "https://oauth2.googleapis.com/token",
            FORM,
            (
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="
                + jwt({"iss": "svc@proj.iam.gserviceaccount.com", "scope": "x"})
            ).encode(),
            id="jwt assertion to a token endpoint",
        ),
    ],
)
def test_the_recipients_own_credentials_are_authentication(url, headers, body):
    assert secrets(url, headers, body) == set()


@pytest.mark.parametrize(
    ("url", "headers", "body", "location"),
    [
        pytest.param(
            "https://api.segment.io/v1/track",
            JSON,
            orjson.dumps({"event": "x", "properties": {"api_secret": "s-456"}}),
            "json:$.properties.api_secret",
            id="a secret-named field deep in content",
        ),
        pytest.param(
            "https://api.partner.example/v1/x",
            JSON,
            orjson.dumps({"note": f"keys: {AWS_KEY}"}),
            "json:$.note",
            id="aws key in content",
        ),
        pytest.param(
            "https://sqs.ap-southeast-1.amazonaws.com/1/q",
            JSON,
            orjson.dumps({"MessageBody": f"id {AWS_KEY}"}),
            "json:$.MessageBody",
            id="aws key in content even to aws",
        ),
        pytest.param(
            "https://api.partner.example/v1/x",
            JSON,
            orjson.dumps({"config": PEM}),
            "json:$.config",
            id="private key",
        ),
        pytest.param(
            "https://api.partner.example/v1/x",
            JSON,
            orjson.dumps({"dsn": DB_URL}),
            "json:$.dsn",
            id="database url with a password",
        ),
        pytest.param(
            "https://api.partner.example/v1/x",
            [*JSON, ("Authorization", "Bearer " + SLACK)],
            b"{}",
            "header:authorization",
            id="slack token to another host",
        ),
        pytest.param(
            "https://api.partner.example/v1/x",
            [*JSON, ("X-Api-Key", GITHUB)],
            b"{}",
            "header:x-api-key",
            id="github token in a vendor key header",
        ),
        pytest.param(
            "https://api.partner.example/v1/x",
            FORM,
            f"api_key={STRIPE}".encode(),
            "form:api_key",
            id="stripe key to another host",
        ),
        pytest.param(
            "https://api.partner.example/v1/x",
            FORM,
            f"api_key={DB_URL}".encode(),
            "form:api_key",
            id="database url in a credential field",
        ),
        pytest.param(
            "https://api.partner.example/v1/x",
            JSON,
            orjson.dumps({"password": "hunter2"}),
            "json:$.password",
            id="a password stays a secret",
        ),
    ],
)
def test_our_secrets_stay_secrets(url, headers, body, location):
    assert location in secrets(url, headers, body)


def test_a_jwt_of_our_own_issuer_is_a_secret_even_as_a_bearer():
    limits = InspectionLimits(own_token_issuers=("https://auth.qwiqi.example",))
    token = jwt({"iss": "https://auth.qwiqi.example", "sub": "svc-sms"})
    headers = [*JSON, ("Authorization", f"Bearer {token}")]
    url = "https://api.partner.example/v1/x"
    assert secrets(url, headers, b"{}", limits) == {"header:authorization"}
    assert secrets(url, headers, b"{}") == set()


def test_personal_claims_of_a_bearer_jwt_are_data():
    token = jwt({"sub": "u-1", "phone_number": "+6591234567"})
    headers = [*JSON, ("Authorization", f"Bearer {token}")]
    assert ("contact.phone_number", "header:authorization.phone_number") in findings(
        "https://api.partner.example/v1/x", headers, b"{}"
    )
