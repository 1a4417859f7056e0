"""Form bodies, URL query and path, and request headers."""

from __future__ import annotations

import pytest

from proxy.inspect import inspect_call

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def found(url: str, headers=(), body: bytes = b"", method: str = "POST") -> set:
    inspection = inspect_call(method, url, headers, body)
    assert inspection.complete, inspection.problems
    return {(f.category, f.location) for f in inspection.findings}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b"To=%2B14155552671&From=%2B15005550006&Body=Your+code+is+482913",
            {
                ("contact.phone_number", "form:To"),
                ("contact.phone_number", "form:From"),
                ("comms.content", "form:Body"),
            },
            id="twilio messages",
        ),
        pytest.param(
            b"api_key=abcd1234&api_secret=Xyz987&to=447911123456&from=Acme&text=Hello",
            {
                ("contact.phone_number", "form:to"),
                ("comms.content", "form:text"),
            },
            id="vonage sms (api_key and api_secret authenticate the call: not a data share)",
        ),
        pytest.param(
            b"to%5B0%5D=%2B6591234567&to%5B1%5D=%2B85291234567&user%5Bphone%5D=91234567"
            b"&user%5Bfirst_name%5D=Mei",
            {
                ("contact.phone_number", "form:to[0]"),
                ("contact.phone_number", "form:to[1]"),
                ("contact.phone_number", "form:user[phone]"),
                ("contact.name", "form:user[first_name]"),
            },
            id="bracket keys",
        ),
        pytest.param(
            b"Body=Call+me+on+9123+4567+tomorrow&To=%2B6591234567",
            {
                ("comms.content", "form:Body"),
                ("contact.phone_number", "form:Body"),
                ("contact.phone_number", "form:To"),
            },
            id="national number inside the message text",
        ),
        pytest.param(
            b"amount=2000&currency=sgd&card%5Bnumber%5D=4242424242424242&card%5Bexp_month%5D=12",
            {("payment.account_number", "form:card[number]")},
            id="stripe card number",
        ),
        pytest.param(
            b"order_id=4155552671&amount=6591234567&timestamp=1700000000000&status=200",
            set(),
            id="trap: order id, amount, timestamp",
        ),
        pytest.param(
            b"Action=SendEmail&Destination.ToAddresses.member.1=Mei+Tan+%3Cmei.tan%40example.com%3E"
            b"&Message.Subject.Data=Invoice&Message.Body.Text.Data=Hi+Mei%2C+your+invoice+is+ready.",
            {
                ("contact.email", "form:Destination.ToAddresses.member.1"),
                ("contact.name", "form:Destination.ToAddresses.member.1"),
                ("comms.content", "form:Message.Body.Text.Data"),
            },
            id="aws query protocol: dotted keys mean their segment before Data/member/N",
        ),
        pytest.param(
            b"Action=SetSMSAttributes&attributes.entry.1.key=DefaultSenderID"
            b"&attributes.entry.1.value=QWIQI&attributes.entry.2.key=MonthlySpendLimit"
            b"&attributes.entry.2.value=500",
            set(),
            id="trap: aws query protocol attributes",
        ),
    ],
)
def test_form_bodies(body, expected):
    assert found("https://api.example.com/send", FORM, body) == expected


def test_form_in_a_declared_charset():
    body = b"To=%2B6591234567&Body=Gr%FC%DFe+aus+K%F6ln&Name=J%FCrgen"
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=iso-8859-1"}
    inspection = inspect_call("POST", "https://api.example.com/send", headers, body)
    assert {(f.category, f.location) for f in inspection.findings} == {
        ("contact.phone_number", "form:To"),
        ("comms.content", "form:Body"),
    }
    assert inspection.complete


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            "https://lookups.twilio.com/v2/PhoneNumbers/+14155552671",
            {("contact.phone_number", "path:3")},
            id="twilio lookup path",
        ),
        pytest.param(
            "https://lookups.twilio.com/v2/PhoneNumbers/%2B14155552671?Fields=line_type_intelligence",
            {("contact.phone_number", "path:3")},
            id="percent-encoded plus",
        ),
        pytest.param(
            "https://hlr.example.com/hlr/447911123456",
            {("contact.phone_number", "path:2")},
            id="hlr path without plus",
        ),
        pytest.param(
            "https://api.nexmo.com/ni/advanced/json?api_key=k&api_secret=s&number=447911123456",
            {("contact.phone_number", "query:number")},
            id="vonage number insight query",
        ),
        pytest.param(
            "https://ipinfo.io/93.184.216.34/json",
            {("network.ip_address", "path:1")},
            id="ip in path",
        ),
        pytest.param(
            "https://api.example.com/v1/users/mei@example.com",
            {("contact.email", "path:3")},
            id="e-mail in path",
        ),
        pytest.param(
            "https://api.example.com/v1/orders/4155552671?page=2&id=6591234567",
            set(),
            id="trap: order number path, id query",
        ),
        pytest.param(
            "https://maps.example.com/geocode?lat=1.2903&lng=103.8519&key=AIzaXYZ",
            {("location.precise", "query:lat"), ("location.precise", "query:lng")},
            id="lat lng query (api key skipped)",
        ),
    ],
)
def test_url_query_and_path(url, expected):
    assert found(url, method="GET") == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(
            [("X-MSISDN", "6591234567")],
            {("contact.phone_number", "header:x-msisdn")},
            id="x-msisdn",
        ),
        pytest.param(
            [("X-Forwarded-For", "93.184.216.34, 10.0.0.1")],
            {("network.ip_address", "header:x-forwarded-for")},
            id="forwarded client ip",
        ),
        pytest.param(
            [("X-Forwarded-For", "10.0.0.1, 172.16.0.4")], set(), id="trap: private forwarded ips"
        ),
        pytest.param(
            [
                ("Authorization", "Basic KzY1OTEyMzQ1Njc="),
                (
                    "Cookie",
                    "session=8f14e45fceea167a5a36dedd4bea2543; _ga=GA1.2.1234567890.1700000000",
                ),
                ("X-Api-Key", "+6591234567"),
                (
                    "Proxy-Authorization",
                    "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.x",
                ),
            ],
            set(),
            id="trap: credentials meant for the vendor",
        ),
        pytest.param(
            [("Cookie", "theme=dark; phone=%2B6591234567")],
            {("contact.phone_number", "cookie:phone")},
            id="a phone number in a cookie is shared with the recipient",
        ),
        pytest.param(
            [
                ("Date", "Mon, 15 Jan 2024 10:00:00 GMT"),
                ("X-Request-Id", "6591234567"),
                ("Content-Length", "6591234567"),
            ],
            set(),
            id="trap: protocol headers",
        ),
        pytest.param(
            [("X-Customer-Email", "mei@example.com")],
            {("contact.email", "header:x-customer-email")},
            id="e-mail header",
        ),
    ],
)
def test_request_headers(headers, expected):
    assert found("https://api.example.com/", headers, method="GET") == expected


def test_form_keys_that_are_identifiers_are_masked():
    body = b"vars%5Bmei%40example.com%5D%5Bname%5D=Mei&%2B6591234567=1"
    inspection = inspect_call("POST", "https://api.example.com/", FORM, body)
    assert {(f.category, f.location) for f in inspection.findings} == {
        ("contact.email", "form:*"),
        ("contact.phone_number", "form:*"),
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b"Body=STOP&From=%2B14155550123&To=%2B15005550006",
            {
                ("comms.content", "form:Body"),
                ("mobile.sms_consent", "form:Body"),
                ("contact.phone_number", "form:From"),
                ("contact.phone_number", "form:To"),
            },
            id="an inbound STOP",
        ),
        pytest.param(
            b"Channel=sms&OptOut=true&Address=%2B6591234567",
            {("mobile.sms_consent", "form:OptOut"), ("contact.phone_number", "form:Address")},
            id="a channel field that says sms",
        ),
        pytest.param(
            b"user_id=%2B6591234567&external_id=mei%40example.com",
            {("contact.phone_number", "form:user_id"), ("contact.email", "form:external_id")},
            id="a number and an address as ids",
        ),
    ],
)
def test_form_bodies_second_round(body, expected):
    assert found("https://api.example.com/send", FORM, body) == expected


def test_a_query_id_holding_a_number_is_found():
    url = "https://api.example.com/v1/users?user_id=%2B6591234567&page=2"
    assert found(url, method="GET") == {("contact.phone_number", "query:user_id")}


@pytest.mark.parametrize(
    ("url", "records_consent"),
    [
        pytest.param("https://go.urbanairship.com/api/channels/sms/opt-out", True, id="airship"),
        pytest.param(
            "https://acs.example/sms/optouts:add?api-version=2024-12-10", True, id="azure"
        ),
        pytest.param("https://acs.example/sms/optouts:remove", True, id="an opt back in"),
        pytest.param("https://acs.example/sms/optouts:check", False, id="asking is no record"),
        pytest.param("https://api.mailgun.net/v3/mg.example/unsubscribes", False, id="e-mail"),
        pytest.param("https://api.example.com/opt-out/sms", False, id="sms after the opt-out"),
    ],
)
def test_an_sms_opt_out_endpoint_records_consent(url, records_consent):
    body = b'{"msisdn": "+6591234567"}'
    categories = {c for c, _ in found(url, {"Content-Type": "application/json"}, body)}
    assert ("mobile.sms_consent" in categories) is records_consent
    assert "contact.phone_number" in categories


def test_an_opt_out_endpoint_sent_as_a_callback_is_no_consent():
    body = b"To=%2B6591234567&OptOutCallback=https%3A%2F%2Fhooks.example%2Fsms%2Fopt-out"
    assert found("https://api.example.com/send", FORM, body) == {
        ("contact.phone_number", "form:To")
    }
