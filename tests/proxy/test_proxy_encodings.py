"""End-to-end: encoded personal data through the real proxy process is blocked before upstream.

Plain HTTP to `api.vendor.test`: any personal data found is `PERSONAL_DATA_IN_CLEARTEXT`, so a
403 shows the encoding was seen through, and the same encoding of a clean payload still passes.
"""

from __future__ import annotations

import base64
import gzip
import uuid

import orjson
import pytest
import requests

PHONE_DOC = orjson.dumps({"phone": "+6591234567"})
CLEAN_DOC = orjson.dumps({"status": "delivered", "count": 3})


def _session(proxy) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.proxies = {"http": proxy.url, "https": proxy.url}
    return s


ENCODED = [
    pytest.param(
        {"Content-Type": "application/json"},
        gzip.compress(PHONE_DOC),
        id="gzip without content-encoding",
    ),
    pytest.param(
        {"Content-Type": "application/json"},
        orjson.dumps({"cc": "+65", "num": "91234567"}),
        id="split fields",
    ),
    pytest.param(
        {"Content-Type": "application/json"},
        orjson.dumps({"data": base64.b64encode(PHONE_DOC).decode()}),
        id="base64 in a field",
    ),
]


@pytest.mark.parametrize(("headers", "body"), ENCODED)
def test_encoded_personal_data_is_blocked_and_never_reaches_upstream(
    proxy, upstreams, headers, body
):
    marker = f"encoded-{uuid.uuid4().hex[:8]}"
    url = f"http://api.vendor.test:{upstreams.http_port}/{marker}"
    r = _session(proxy).post(url, data=body, headers=headers, timeout=10)
    assert r.status_code == 403, r.text
    assert [x["code"] for x in r.json()["reasons"]] == ["PERSONAL_DATA_IN_CLEARTEXT"]
    assert upstreams.find(marker) == []
    line = proxy.decision(r.headers["X-Sharewall-Decision-Id"])
    assert line["categories"] == ["contact.phone_number"]
    assert "91234567" not in proxy.log_text()


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param({"Content-Type": "application/json"}, gzip.compress(CLEAN_DOC), id="gzip"),
        pytest.param(
            {"Content-Type": "application/json"},
            orjson.dumps({"cc": "+65", "count": "3"}),
            id="split-looking fields",
        ),
        pytest.param(
            {"Content-Type": "application/json"},
            orjson.dumps({"data": base64.b64encode(CLEAN_DOC).decode()}),
            id="base64",
        ),
    ],
)
def test_the_same_encodings_of_a_clean_payload_pass(proxy, upstreams, headers, body):
    marker = f"clean-{uuid.uuid4().hex[:8]}"
    url = f"http://api.vendor.test:{upstreams.http_port}/{marker}"
    r = _session(proxy).post(url, data=body, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    [seen] = upstreams.find(marker)
    assert seen.body == body
