"""Detectors one by one: each value under each key, with the traps next to the hits."""

from __future__ import annotations

import orjson
import pytest
from stdnum import luhn

from proxy.inspect import inspect_call
from proxy.inspect.categories import EMITTED
from sharewall.taxonomy import load_taxonomy

ICCID = "896501234567890123" + luhn.calc_check_digit("896501234567890123")
AD_ID = "9c9a82fb-d5de-4cd1-90c3-527441c11828"
ZERO_AD_ID = "00000000-0000-0000-0000-000000000000"
SHA = "fd38d3edfeb70b7fb09e74e269d27f6fb24d5c75799b7e3d85604a5965a6623f"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


def categories_of(doc: dict, url: str = "https://api.example.com/v1/x") -> set[str]:
    inspection = inspect_call("POST", url, {"Content-Type": "application/json"}, orjson.dumps(doc))
    assert inspection.complete
    return {f.category for f in inspection.findings}


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        # phone numbers
        pytest.param({"to": "+65 9123-4567"}, {"contact.phone_number"}, id="phone: separators"),
        pytest.param(
            {"to": "(+1) 415.555.2671"}, {"contact.phone_number"}, id="phone: dots and parens"
        ),
        pytest.param(
            {"mobile": "91234567"},
            {"contact.phone_number"},
            id="phone: national SG under a phone key",
        ),
        pytest.param(
            {"phone": "0065 9123 4567"},
            {"contact.phone_number"},
            id="phone: 00 international prefix",
        ),
        pytest.param(
            {"dst": 447911123456},
            {"contact.phone_number"},
            id="phone: json number under a phone key",
        ),
        pytest.param(
            {"number": "6591234567"}, {"contact.phone_number"}, id="phone: bare number key"
        ),
        pytest.param(
            {"invoice": {"number": "6591234567"}, "order": {"number": 4155552671}},
            set(),
            id="trap: invoice and order numbers",
        ),
        pytest.param(
            {"note": "91234567"}, set(), id="trap: national digits under an unrelated key"
        ),
        pytest.param({"to": "+1234567890"}, set(), id="trap: plus but not a valid number"),
        # documentation's numbers: reserved or fictional, but numbers (possible, not valid)
        pytest.param({"to": "+15558675310"}, {"contact.phone_number"}, id="phone: +1 555 (docs)"),
        pytest.param({"to": "447700900000"}, {"contact.phone_number"}, id="phone: Ofcom drama"),
        pytest.param(
            {"comment": "Customer at +1 555 867 5310 reports no OTP"},
            {"contact.phone_number"},
            id="phone: a possible number with its + in text",
        ),
        pytest.param({"to": "+11234567890"}, set(), id="trap: NANP area code starting 1"),
        pytest.param(
            {"contacts": [{"profile": {"name": "Mei Tan"}, "wa_id": "6591234567"}]},
            {"contact.phone_number", "contact.name"},
            id="phone: WhatsApp wa_id",
        ),
        pytest.param({"ref": "15558675310"}, set(), id="trap: possible digits, no key, no +"),
        pytest.param({"to": "InfoSMS"}, set(), id="trap: alphanumeric sender id"),
        pytest.param(
            {"text": "Meeting on 2024-01-15 at 10:30, order 20240115"},
            {"comms.content"},
            id="trap: dates and times in a message",
        ),
        pytest.param(
            {"text": "Your code is 482913"}, {"comms.content"}, id="trap: otp code in a message"
        ),
        pytest.param(
            {"text": "Call us on 6123 4567 today"},
            {"comms.content", "contact.phone_number"},
            id="phone: national number in a message",
        ),
        pytest.param(
            {
                "text": "Track it at https://acme.example.com/t/8812-2291 or www.acme.example/9123-4567"
            },
            {"comms.content"},
            id="trap: digits in a link in a message",
        ),
        pytest.param(
            {"text": "Track it at https://acme.example.com/t/1 or call 6123 4567"},
            {"comms.content", "contact.phone_number"},
            id="phone: national number after a link in a message",
        ),
        pytest.param(
            {"text": "Order 8812 2291 ships on 15.01.2024, total 9123.45"},
            {"comms.content"},
            id="trap: order reference, date and amount in a message",
        ),
        pytest.param(
            {"text": "Text 8812 2291 for help"},
            {"comms.content", "contact.phone_number"},
            id="phone: national mobile in a message",
        ),
        # e-mail
        pytest.param({"contact": "mailto:mei@example.com"}, {"contact.email"}, id="email: mailto"),
        pytest.param({"url": "https://x.example/u@2x.png"}, set(), id="trap: @ in an url"),
        # network
        pytest.param(
            {"client_ip": "2a00:1450:4001:80b::200e"}, {"network.ip_address"}, id="ip: public ipv6"
        ),
        pytest.param(
            {"meta": "seen from 93.184.216.34"}, {"network.ip_address"}, id="ip: in free text"
        ),
        pytest.param(
            {"server": "10.1.2.3", "dns": "192.0.2.1"},
            set(),
            id="trap: private and documentation ips",
        ),
        pytest.param({"version": "8.8.8.8"}, set(), id="trap: version-looking value under version"),
        # device ids
        pytest.param({"imei": "49-015420-323751-8"}, {"mobile.device_id"}, id="imei: formatted"),
        pytest.param({"imei": "490154203237519"}, set(), id="trap: imei with a wrong check digit"),
        pytest.param({"sim": {"iccid": ICCID}}, {"mobile.device_id"}, id="iccid under key"),
        pytest.param({"value": ICCID}, {"mobile.device_id"}, id="iccid by value"),
        pytest.param(
            {"device_id": "3f1e2d4c-1111-4a4a-9b9b-123456789abc"},
            set(),
            id="trap: app install id is not a handset id",
        ),
        # payment
        pytest.param({"pan": "4111111111111111"}, {"payment.account_number"}, id="card under key"),
        pytest.param(
            {"memo": "card 5500 0000 0000 0004"}, {"payment.account_number"}, id="card in text"
        ),
        pytest.param({"memo": "ref 4111111111111112"}, set(), id="trap: 16 digits failing luhn"),
        pytest.param({"memo": "ref 9111111111111111"}, set(), id="trap: luhn-valid but no issuer"),
        pytest.param(
            {"to_account": "DE89 3704 0044 0532 0130 00"},
            {"payment.account_number"},
            id="iban by value",
        ),
        pytest.param(
            {"account_number": "0123456789"}, {"payment.account_number"}, id="bank account key"
        ),
        # government ids
        pytest.param({"memo": "SSN 536-90-4399"}, {"government_id"}, id="ssn formatted in text"),
        pytest.param({"memo": "call 666-12-3456"}, set(), id="trap: invalid ssn area 666"),
        pytest.param({"nric": "S1234567D"}, {"government_id"}, id="nric under key"),
        # location
        pytest.param({"lat": 1.29, "lng": 103.85}, {"location.precise"}, id="lat lng pair"),
        pytest.param({"lat": 1.29}, set(), id="trap: latitude without its pair"),
        pytest.param(
            {"location": "1.2903,103.8519"}, {"location.precise"}, id="pair in one string"
        ),
        pytest.param(
            {"geometry": {"coordinates": [103.85, 1.29]}},
            {"location.precise"},
            id="geojson coordinates",
        ),
        # mobile
        pytest.param(
            {"msisdn": "+6591234567", "reachable": True},
            {"contact.phone_number", "mobile.device_status"},
            id="device status",
        ),
        pytest.param(
            {"msisdn": "+6591234567", "network": "SingTel", "mcc": "525", "mnc": "01"},
            {"contact.phone_number", "mobile.carrier"},
            id="carrier beside a number",
        ),
        pytest.param(
            {"msisdn": "6591234567", "mccmnc": "52501", "country": "SG"},
            {"contact.phone_number", "mobile.carrier", "location.country"},
            id="hlr record country",
        ),
        pytest.param(
            {"to": "+6591234567", "country": "SG"},
            {"contact.phone_number"},
            id="trap: country beside a message recipient",
        ),
        pytest.param(
            {"rates": [{"mccmnc": "52501", "network": "Singtel", "country": "SG"}]},
            set(),
            id="trap: rate table by mcc-mnc",
        ),
        pytest.param(
            {"merchant": {"mcc": "5814", "network": "visa"}},
            set(),
            id="trap: merchant category code",
        ),
        pytest.param(
            {"msisdn": "+6591234567", "line_type": "mobile", "valid": True},
            {"contact.phone_number", "mobile.number_validity"},
            id="number validity",
        ),
        pytest.param(
            {"keyword": "STOP", "from": "+6591234567"},
            {"mobile.sms_consent", "contact.phone_number"},
            id="stop keyword",
        ),
        pytest.param({"keyword": "summer-sale"}, set(), id="trap: marketing keyword"),
        pytest.param(
            {
                "phone": "+6591234567",
                "consent_timestamp": "2024-01-15T10:00:00Z",
                "opt_in_source": "web",
            },
            {"contact.phone_number", "mobile.sms_consent"},
            id="consent record",
        ),
        pytest.param(
            {"call": {"duration": 125, "status": "completed"}}, {"comms.usage"}, id="call duration"
        ),
        pytest.param({"video": {"duration": 125}}, set(), id="trap: video duration"),
        # names, addresses, employment
        pytest.param({"customer": {"name": "Mei Tan"}}, {"contact.name"}, id="name of a customer"),
        pytest.param(
            {"name": "Mei Tan", "email": "mei@example.com"},
            {"contact.name", "contact.email"},
            id="name beside an email",
        ),
        pytest.param(
            {"template": {"name": "order_shipped"}, "name": "spring"},
            set(),
            id="trap: template and bare names",
        ),
        # a `name` is a person's under a person-context key or beside a phone number
        pytest.param(
            {"ticket": {"requester": {"name": "Tan Ah Kow", "phone": "+6591234567"}}},
            {"contact.name", "contact.phone_number"},
            id="name: ticket requester with only a phone sibling",
        ),
        pytest.param(
            {"shopper": {"name": "Mei Tan"}, "payer": {"name": "Tan Ah Kow"}},
            {"contact.name"},
            id="name: under shopper and payer",
        ),
        pytest.param({"lead": {"name": "Sarah Mason"}}, {"contact.name"}, id="name: CRM lead"),
        pytest.param(
            {"name": "Tan Ah Kow", "to": "+6591234567"},
            {"contact.name", "contact.phone_number"},
            id="name: beside a phone sibling",
        ),
        pytest.param(
            {"sender": {"name": "Mei Tan", "email": "mei.tan@example.com"}},
            {"contact.name", "contact.email"},
            id="name: an e-mail sender's name",
        ),
        pytest.param(
            {"campaign": {"name": "Black Friday Promo", "from": "+6591234567"}},
            {"contact.phone_number"},
            id="trap: campaign name beside a phone",
        ),
        pytest.param(
            {"name": "Black friday promo", "to": "+6591234567"},
            {"contact.phone_number"},
            id="trap: lowercase promo name beside a phone",
        ),
        pytest.param(
            {"sender": {"name": "QWIQI", "type": "alphanumeric"}, "sender_id": {"name": "QWIQI"}},
            set(),
            id="trap: sender id names",
        ),
        pytest.param(
            {"name": "QWIQI", "to": "+6591234567"},
            {"contact.phone_number"},
            id="trap: sender id beside a phone",
        ),
        pytest.param(
            {"plan": {"name": "Unlimited 5G"}, "subscriber": {"plan": {"name": "Data Plus"}}},
            set(),
            id="trap: plan names, even under a subscriber",
        ),
        # SMPP over HTTP
        pytest.param(
            {"source_addr": "QWIQI", "destination_addr": "6591234567", "short_message": "Hi Mei"},
            {"contact.phone_number", "comms.content"},
            id="content: SMPP short_message",
        ),
        pytest.param(
            {"message_payload": "Your parcel arrives today"},
            {"comms.content"},
            id="content: SMPP message_payload",
        ),
        pytest.param(
            {"short_message": "Reply STOP to opt out", "opt_in": True},
            {"comms.content", "mobile.sms_consent"},
            id="content: SMPP body makes its object an SMS context",
        ),
        pytest.param(
            {"user": {"job_title": "Engineer", "employer": "Acme"}},
            {"account.employment"},
            id="employment",
        ),
        pytest.param({"page": {"title": "Checkout"}}, set(), id="trap: page title"),
        pytest.param(
            {"shipping_address": "1 Raffles Place, Singapore 048616"},
            {"contact.postal_address"},
            id="address",
        ),
        pytest.param({"zip": "048616"}, set(), id="trap: zip outside an address"),
        pytest.param(
            {"email_address": "mei@example.com", "ip_address": "93.184.216.34"},
            {"contact.email", "network.ip_address"},
            id="trap: email/ip address are not postal",
        ),
        # secrets
        pytest.param({"password": "hunter2"}, {"credentials.secret"}, id="password"),
        pytest.param({"password": ""}, set(), id="trap: empty password field"),
        pytest.param({"note": JWT}, {"credentials.secret"}, id="jwt in a body"),
        pytest.param(
            {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": JWT},
            set(),
            id="trap: a jwt assertion where the token endpoint expects it",
        ),
        pytest.param(
            {"token_type": "bearer", "expires_in": 3600}, set(), id="trap: oauth metadata"
        ),
        # mobile advertising ids (IDFA, GAID/AAID, Meta's madid): mobile.device_id
        pytest.param({"advertising_id": AD_ID}, {"mobile.device_id"}, id="ad id: GAID"),
        pytest.param({"idfa": AD_ID.upper()}, {"mobile.device_id"}, id="ad id: IDFA"),
        pytest.param(
            {"context": {"device": {"advertisingId": AD_ID, "id": AD_ID}}},
            {"mobile.device_id"},
            id="ad id: Segment advertisingId, not device.id",
        ),
        pytest.param({"user_data": {"madid": AD_ID}}, {"mobile.device_id"}, id="ad id: madid"),
        pytest.param(
            {"userIdentifiers": [{"mobileId": AD_ID}]},
            {"mobile.device_id"},
            id="ad id: Google Ads customer match mobileId",
        ),
        pytest.param({"hashed_maids": [SHA]}, {"mobile.device_id"}, id="ad id: hashed"),
        pytest.param({"idfa": ZERO_AD_ID}, set(), id="trap: all-zero IDFA (limited tracking)"),
        pytest.param({"adid": "2f7c5e1d0b9a48f7a6c5d4e3f2a1b0c9"}, set(), id="trap: Adjust adid"),
        pytest.param(
            {"advertising_campaign_id": AD_ID}, set(), id="trap: a campaign's id, not a device's"
        ),
        # identifier types named beside the identifiers (hashes carry no shape of their own)
        pytest.param(
            {
                "payload": {
                    "schema": ["EMAIL_SHA256", "PHONE_SHA256", "DOBY"],
                    "data": [[SHA, SHA, SHA]],
                }
            },
            {"contact.email", "contact.phone_number"},
            id="id type: Custom Audience schema columns",
        ),
        pytest.param(
            {"idType": "SHA256_EMAIL", "idValue": SHA}, {"contact.email"}, id="id type: LinkedIn"
        ),
        pytest.param({"idType": "ACXIOM_ID", "idValue": "A1B2C3"}, set(), id="trap: id type"),
        pytest.param(
            {"schema": {"type": "object", "properties": {"email": {"type": "string"}}}},
            set(),
            id="trap: a JSON schema",
        ),
        # SMS consent: TCPA consent, texting opt-ins, opted-out numbers, opt-in operations
        pytest.param({"tcpa_consent": True}, {"mobile.sms_consent"}, id="consent: tcpa flag"),
        pytest.param({"text_opt_in": False}, {"mobile.sms_consent"}, id="consent: text opt-in"),
        pytest.param({"marketing_text": "50% off all plans"}, set(), id="trap: marketing text"),
        pytest.param(
            {"OptedOutNumber": "+6591234567"},
            {"contact.phone_number", "mobile.sms_consent"},
            id="consent: an opted-out number",
        ),
        pytest.param({"whatsapp_opt_in": True}, {"mobile.sms_consent"}, id="consent: bool opt-in"),
        pytest.param(
            {"Action": "OptInPhoneNumber", "phoneNumber": "+6591234567"},
            {"contact.phone_number", "mobile.sms_consent"},
            id="consent: an opt-in operation on a number",
        ),
        pytest.param(
            {"action": "opt_in", "email": "mei@example.com"},
            {"contact.email"},
            id="trap: an e-mail list's opt-in",
        ),
        pytest.param({"action": "send_sms"}, set(), id="trap: another operation"),
        pytest.param(
            {"From": "+6591234567", "Body": "STOP", "OptOutType": "STOP"},
            {"contact.phone_number", "comms.content", "mobile.sms_consent"},
            id="consent: a forwarded inbound STOP (Twilio OptOutType)",
        ),
        pytest.param({"OptOutType": "HELP"}, set(), id="trap: HELP is no opt-out"),
        # Mailchimp merge tags, OneSignal's contents by language
        pytest.param(
            {"merge_fields": {"FNAME": "Mei", "LNAME": "Tan"}},
            {"contact.name"},
            id="name: Mailchimp merge tags",
        ),
        pytest.param(
            {"contents": {"en": "Your parcel arrives today"}}, {"comms.content"}, id="contents"
        ),
        pytest.param(
            {"Twiml": "<Response><Say>Your code is 4 8 2 9 1 3</Say></Response>"},
            {"comms.content"},
            id="content: TwiML a call speaks",
        ),
        # URLs sent as values: their query and path are read (the host is a server)
        pytest.param(
            {"StatusCallback": "https://hooks.qwiqi.example/sms/status?msisdn=6591234567"},
            {"contact.phone_number"},
            id="url: a number in a callback's query",
        ),
        pytest.param(
            {"notifyUrl": "https://hooks.qwiqi.example/dlr?to=%2B6591234567&e=mei%40example.com"},
            {"contact.phone_number", "contact.email"},
            id="url: percent-encoded number and e-mail in a link's query",
        ),
        pytest.param(
            {"webhook": "https://93.184.216.34:8443/hooks/sms?tenant=sg-1&id=4402918833"},
            set(),
            id="trap: a webhook on our server's address, ids in its query",
        ),
        # e-mail addresses with a display name
        pytest.param(
            {"To": '"Mei Tan" <mei.tan@example.com>'},
            {"contact.email", "contact.name"},
            id="name: an e-mail's display name",
        ),
        pytest.param(
            {
                "from": "QWIQI Billing <billing@qwiqi.example>",
                "reply_to": "Acme Support <s@acme.example>",
            },
            {"contact.email"},
            id="trap: a mailbox's display name",
        ),
        # servers' addresses: DNS records, CDN origins
        pytest.param(
            {"type": "A", "name": "api.qwiqi.example", "content": "93.184.216.34", "ttl": 300},
            set(),
            id="trap: a DNS record's address",
        ),
        pytest.param(
            {
                "type": "TXT",
                "name": "qwiqi.example",
                "content": "v=spf1 ip4:93.184.216.0/24 ~all",
                "ttl": 300,
            },
            set(),
            id="trap: a DNS TXT record",
        ),
        pytest.param(
            {"origins": [{"name": "sg-1", "address": "93.184.216.34"}], "monitor": "m1"},
            set(),
            id="trap: CDN origin servers",
        ),
        pytest.param(
            {"mode": "block", "configuration": {"target": "ip", "value": "93.184.216.34"}},
            {"network.ip_address"},
            id="ip: a firewall rule's address is a client's",
        ),
    ],
)
def test_detectors(doc, expected):
    assert categories_of(doc) == expected


def test_a_documentation_number_in_a_lookup_path_is_a_phone_number():
    # `+1 555 867 5310` is no valid number, but a lookup path's segment says it is one.
    url = "https://lookups.twilio.com/v2/PhoneNumbers/+15558675310?Fields=line_type_intelligence"
    inspection = inspect_call("GET", url, {}, b"")
    assert {(f.category, f.location) for f in inspection.findings} == {
        ("contact.phone_number", "path:3")
    }


def test_a_callback_repeated_in_a_batch_is_found_at_each_element():
    # The second element's callback is answered from the call's memo of the first: what was
    # found inside the URL (its query) must be remembered with it.
    callback = "https://hooks.qwiqi.example/sms/status?msisdn=6591234567"
    batch = [{"text": "Hi", "callback": callback}, {"text": "Hi", "callback": callback}]
    inspection = inspect_call(
        "POST",
        "https://api.example.com/v1/x",
        {"Content-Type": "application/json"},
        orjson.dumps(batch),
    )
    phones = [f.location for f in inspection.findings if f.category == "contact.phone_number"]
    assert [any(loc.startswith(f"json:$[{i}].callback") for loc in phones) for i in (0, 1)] == [
        True,
        True,
    ]


def test_hlr_endpoint_makes_status_a_device_status():
    doc = {"status": "ABSENT", "valid": True}
    assert categories_of(doc, "https://hlr.example.com/v1/hlr/lookup") == {
        "mobile.device_status",
        "mobile.number_validity",
    }
    assert categories_of(doc) == set()
    assert categories_of(doc, "https://api.example.com/v1/address/lookup") == set()


def test_a_form_mislabelled_as_json_is_still_read():
    body = b"To=%2B6591234567&Email=mei%40example.com"
    inspection = inspect_call(
        "POST", "https://x.example/", {"Content-Type": "application/json"}, body
    )
    assert inspection.problems == ("malformed_json",)
    assert {(f.category, f.location) for f in inspection.findings} == {
        ("contact.phone_number", "text"),
        ("contact.email", "text"),
    }


def test_text_bodies_are_scanned_as_free_text():
    body = b"Hello, reach me at +65 9123 4567 or mei@example.com. Card 4111 1111 1111 1111."
    inspection = inspect_call("POST", "https://x.example/", {"Content-Type": "text/plain"}, body)
    assert {(f.category, f.location) for f in inspection.findings} == {
        ("contact.phone_number", "text"),
        ("contact.email", "text"),
        ("payment.account_number", "text"),
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b'{"to": "+6591234567"}', {("contact.phone_number", "json:$.to")}, id="json"),
        pytest.param(
            b"<r><msisdn>+6591234567</msisdn></r>",
            {("contact.phone_number", "xml:/r/msisdn")},
            id="xml",
        ),
        pytest.param(
            b"To=%2B6591234567&Body=hi",
            {("contact.phone_number", "form:To"), ("comms.content", "form:Body")},
            id="form",
        ),
        pytest.param(
            b"\x08\x96\x01\x12\x0c+6591234567",
            {("contact.phone_number", "text")},
            id="binary with a number inside",
        ),
    ],
)
def test_unlabelled_bodies_are_sniffed(body, expected):
    inspection = inspect_call("POST", "https://x.example/", {}, body)
    assert {(f.category, f.location) for f in inspection.findings} == expected
    assert inspection.problems == ()


def test_every_emitted_category_is_in_the_taxonomy():
    assert set(load_taxonomy().categories) >= EMITTED
