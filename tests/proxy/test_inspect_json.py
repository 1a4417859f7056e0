"""JSON payloads: real API shapes, key+value detection, and the traps that must stay clean."""

from __future__ import annotations

import orjson
import pytest
from stdnum import luhn

from proxy.inspect import inspect_call
from proxy.inspect.model import MALFORMED_JSON

JSON = {"Content-Type": "application/json"}
ICCID = "896501234567890123" + luhn.calc_check_digit("896501234567890123")
SHA = "254aa248acb47dd654ca3ea53f48c2c26d641d23d7e2e93a1ec56258df7674c4"


def found(body: object, url: str = "https://api.example.com/v1/send", headers=JSON) -> set:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    inspection = inspect_call("POST", url, headers, raw)
    assert inspection.complete, inspection.problems
    return {(f.category, f.location) for f in inspection.findings}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {
                "messages": [
                    {
                        "destinations": [{"to": "41793026727"}, {"to": "+6591234567"}],
                        "from": "InfoSMS",
                        "text": "Your parcel is on its way",
                    }
                ]
            },
            {
                ("contact.phone_number", "json:$.messages[0].destinations[0].to"),
                ("contact.phone_number", "json:$.messages[0].destinations[1].to"),
                ("comms.content", "json:$.messages[0].text"),
            },
            id="infobip advanced sms",
        ),
        pytest.param(
            {"from": "12345", "to": ["+6591234567", "+85291234567"], "body": "Hi"},
            {
                ("contact.phone_number", "json:$.to[0]"),
                ("contact.phone_number", "json:$.to[1]"),
                ("comms.content", "json:$.body"),
            },
            id="sinch batch with a list of recipients",
        ),
        pytest.param(
            {"recipients": "31612345678,31687654321", "originator": "Shop", "body": "Code 1234"},
            {("contact.phone_number", "json:$.recipients"), ("comms.content", "json:$.body")},
            id="messagebird comma separated recipients without plus",
        ),
        pytest.param(
            {
                "data": [
                    {
                        "event_name": "Purchase",
                        "event_time": 1700000000,
                        "user_data": {
                            "em": [SHA],
                            "ph": [SHA],
                            "fn": SHA,
                            "ln": SHA,
                            "ct": SHA,
                            "country": SHA,
                            "client_ip_address": "93.184.216.34",
                            "client_user_agent": "Mozilla/5.0",
                        },
                        "custom_data": {
                            "currency": "USD",
                            "value": 142.52,
                            "order_id": "4155552671",
                        },
                    }
                ]
            },
            {
                ("contact.email", "json:$.data[0].user_data.em[0]"),
                ("contact.phone_number", "json:$.data[0].user_data.ph[0]"),
                ("contact.name", "json:$.data[0].user_data.fn"),
                ("contact.name", "json:$.data[0].user_data.ln"),
                ("contact.postal_address", "json:$.data[0].user_data.ct"),
                ("location.country", "json:$.data[0].user_data.country"),
                ("network.ip_address", "json:$.data[0].user_data.client_ip_address"),
            },
            id="facebook conversions api hashed user_data",
        ),
        pytest.param(
            {
                "operations": [
                    {
                        "create": {
                            "userIdentifiers": [
                                {"hashedEmail": SHA},
                                {"hashedPhoneNumber": SHA},
                                {"addressInfo": {"hashedFirstName": SHA, "countryCode": "US"}},
                            ]
                        }
                    }
                ]
            },
            {
                ("contact.email", "json:$.operations[0].create.userIdentifiers[0].hashedEmail"),
                (
                    "contact.phone_number",
                    "json:$.operations[0].create.userIdentifiers[1].hashedPhoneNumber",
                ),
                (
                    "contact.name",
                    "json:$.operations[0].create.userIdentifiers[2].addressInfo.hashedFirstName",
                ),
                (
                    "contact.postal_address",
                    "json:$.operations[0].create.userIdentifiers[2].addressInfo.countryCode",
                ),
            },
            id="google ads customer match",
        ),
        pytest.param(
            {
                "attributes": [
                    {
                        "external_id": "u-1",
                        "phone": "+6591234567",
                        "first_name": "Mei",
                        "subscription_groups": [
                            {"subscription_group_id": "8c1e", "subscription_state": "subscribed"}
                        ],
                    }
                ]
            },
            {
                ("contact.phone_number", "json:$.attributes[0].phone"),
                ("contact.name", "json:$.attributes[0].first_name"),
                ("mobile.sms_consent", "json:$.attributes[0].subscription_groups"),
                (
                    "mobile.sms_consent",
                    "json:$.attributes[0].subscription_groups[0].subscription_state",
                ),
            },
            id="braze users track with sms subscription group",
        ),
        pytest.param(
            {
                "data": {
                    "type": "profile",
                    "attributes": {
                        "email": "mei@example.com",
                        "phone_number": "+6591234567",
                        "subscriptions": {"sms": {"marketing": {"consent": "SUBSCRIBED"}}},
                    },
                }
            },
            {
                ("contact.email", "json:$.data.attributes.email"),
                ("contact.phone_number", "json:$.data.attributes.phone_number"),
                (
                    "mobile.sms_consent",
                    "json:$.data.attributes.subscriptions.sms.marketing.consent",
                ),
            },
            id="klaviyo profile with sms consent",
        ),
        pytest.param(
            {
                "userId": "u-1",
                "traits": {
                    "name": "Mei Tan",
                    "email": "mei@example.com",
                    "title": "CFO",
                    "company": {"name": "Acme Pte Ltd"},
                    "address": {
                        "street": "1 Raffles Pl",
                        "city": "Singapore",
                        "postalCode": "048616",
                    },
                },
            },
            {
                ("contact.name", "json:$.traits.name"),
                ("contact.email", "json:$.traits.email"),
                ("account.employment", "json:$.traits.title"),
                ("account.employment", "json:$.traits.company.name"),
                ("contact.postal_address", "json:$.traits.address.street"),
                ("contact.postal_address", "json:$.traits.address.city"),
                ("contact.postal_address", "json:$.traits.address.postalCode"),
            },
            id="segment identify traits",
        ),
        pytest.param(
            {
                "msisdn": "447911123456",
                "imsi": "310150123456789",
                "mccmnc": "23410",
                "ported": False,
                "roaming": False,
                "status": "DELIVERED",
                "country": "GB",
            },
            {
                ("contact.phone_number", "json:$.msisdn"),
                ("mobile.device_id", "json:$.imsi"),
                ("mobile.carrier", "json:$.mccmnc"),
                ("mobile.carrier", "json:$.ported"),
                ("mobile.roaming_status", "json:$.roaming"),
                ("mobile.device_status", "json:$.status"),
                ("location.country", "json:$.country"),
            },
            id="hlr record forwarded to a partner",
        ),
        pytest.param(
            {
                "cdrs": [
                    {
                        "from": "+6591234567",
                        "to": "+6598765432",
                        "start_time": "2024-01-15T10:00:00Z",
                        "duration": 125,
                        "completion_status": "ANSWERED",
                    }
                ]
            },
            {
                ("comms.usage", "json:$.cdrs"),
                ("contact.phone_number", "json:$.cdrs[0].from"),
                ("contact.phone_number", "json:$.cdrs[0].to"),
                ("comms.usage", "json:$.cdrs[0].start_time"),
                ("comms.usage", "json:$.cdrs[0].duration"),
                ("comms.usage", "json:$.cdrs[0].completion_status"),
            },
            id="call detail records",
        ),
        pytest.param(
            {
                "device": {"imei": "490154203237518", "iccid": ICCID},
                "location": {"lat": 1.2903, "lng": 103.8519},
                "cell_id": "52501-1234-5678",
            },
            {
                ("mobile.device_id", "json:$.device.imei"),
                ("mobile.device_id", "json:$.device.iccid"),
                ("location.precise", "json:$.location.lat"),
                ("location.precise", "json:$.location.lng"),
                ("location.precise", "json:$.cell_id"),
            },
            id="device ids and a position",
        ),
        pytest.param(
            {
                "ticket": {
                    "requester": {"name": "Mei Tan", "email": "mei@example.com"},
                    "comment": {"body": "My card 4111 1111 1111 1111 was charged twice"},
                }
            },
            {
                ("contact.name", "json:$.ticket.requester.name"),
                ("contact.email", "json:$.ticket.requester.email"),
                ("comms.content", "json:$.ticket.comment.body"),
                ("payment.account_number", "json:$.ticket.comment.body"),
            },
            id="support ticket with a card number in the text",
        ),
        pytest.param(
            {
                "payout": {"iban": "GB82WEST12345698765432", "account_holder_name": "Mei Tan"},
                "customer": {"ssn": "123-45-6789", "passport_number": "E1234567"},
            },
            {
                ("payment.account_number", "json:$.payout.iban"),
                ("contact.name", "json:$.payout.account_holder_name"),
                ("government_id", "json:$.customer.ssn"),
                ("government_id", "json:$.customer.passport_number"),
            },
            id="payments and ids",
        ),
        pytest.param(
            {
                "config": {
                    "client_secret": "s3cr3t",
                    "note": "key AKIAIOSFODNN7EXAMPLE",
                    "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIE...\n",
                }
            },
            {
                ("credentials.secret", "json:$.config.client_secret"),
                ("credentials.secret", "json:$.config.note"),
                ("credentials.secret", "json:$.config.pem"),
            },
            id="our secrets leaking",
        ),
        pytest.param(
            {"payload": orjson.dumps({"customer": {"phone": "+6591234567"}}).decode()},
            {("contact.phone_number", "json:$.payload.customer.phone")},
            id="json encoded inside a string field",
        ),
        pytest.param(
            {"note": "reach me on +65 9123 4567 or mei@example.com", "ip": "8.8.8.8"},
            {
                ("contact.phone_number", "json:$.note"),
                ("contact.email", "json:$.note"),
                ("network.ip_address", "json:$.ip"),
            },
            id="identifiers by value under unrelated keys",
        ),
        pytest.param(
            {
                "to": "tel:+6591234567",
                "alt": "\uff0b\uff16\uff15\uff19\uff11\uff12\uff13\uff14\uff15\uff16\uff17",
                "ar": "+\u0666\u0665\u0669\u0661\u0662\u0663\u0664\u0665\u0666\u0667",
            },
            {
                ("contact.phone_number", "json:$.to"),
                ("contact.phone_number", "json:$.alt"),
                ("contact.phone_number", "json:$.ar"),
            },
            id="tel uri and unicode digits",
        ),
    ],
)
def test_real_payloads_yield_their_categories_at_their_locations(body, expected):
    assert found(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            {"order_id": "4155552671", "invoice": 6591234567, "amount": "6591234567"},
            id="10-digit order, invoice, amount",
        ),
        pytest.param(
            {"timestamp": 1700000000000, "created_at": "1700000000000", "ts": 1700000000},
            id="unix timestamps",
        ),
        pytest.param(
            {"id": "550e8400-e29b-41d4-a716-446655440000", "count": 6591234567}, id="uuid and count"
        ),
        pytest.param(
            {"sha256": SHA, "checksum": SHA, "digest": SHA, "etag": SHA, "hash": SHA},
            id="hex digests of files",
        ),
        pytest.param(
            {
                "product": {"name": "Galaxy S24 Ultra"},
                "campaign": {"name": "Black Friday"},
                "template_name": "otp_v2",
                "name": "welcome-flow",
            },
            id="product, campaign and template names",
        ),
        pytest.param(
            {
                "status": 200,
                "code": 404,
                "date": "2024-01-15",
                "time": "10:30:00",
                "version": "1.2.3.4",
                "message_id": "SM123",
            },
            id="status codes, iso dates, versions",
        ),
        pytest.param(
            {
                "ip": "10.0.0.7",
                "client_ip_address": "127.0.0.1",
                "peer": "192.168.1.2",
                "v6": "fe80::1",
            },
            id="private and loopback addresses",
        ),
        pytest.param(
            {"email": "", "name": None, "opt_in": True},
            id="empty fields and an e-mail newsletter opt-in",
        ),
        pytest.param(
            {
                "currency": "SGD",
                "country": "SG",
                "carrier": "DHL",
                "tracking_number": "1Z999AA10123456784",
            },
            id="shipping carrier and billing country of a company",
        ),
        pytest.param(
            {"reference": "4111111111111111", "card_last4": "1111"},
            id="card-like reference under a reference key",
        ),
        pytest.param(
            {"error": {"code": 21211, "message": "Invalid 'To' Phone Number"}},
            id="error object message",
        ),
    ],
)
def test_traps_are_not_personal_data(body):
    assert found(body) == set()


def test_message_status_beside_a_phone_is_not_device_status():
    body = {"to": "+6591234567", "status": "queued", "price": "0.0075", "valid": True}
    assert found(body) == {("contact.phone_number", "json:$.to")}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {
                "results": {
                    "+6591234567": {"status": "DELIVERED", "ported": False},
                    "6598765432": {"status": "ABSENT"},
                }
            },
            {
                ("contact.phone_number", "json:$.results[*]"),
                ("mobile.device_status", "json:$.results[*].status"),
                ("mobile.carrier", "json:$.results[*].ported"),
            },
            id="hlr results keyed by msisdn",
        ),
        pytest.param(
            {"recipient-variables": {"mei@example.com": {"first": "Mei", "id": 1}}},
            {("contact.email", "json:$.recipient-variables[*]")},
            id="mailgun recipient variables keyed by e-mail",
        ),
        pytest.param(
            {"contacts": {"Mei Tan": "+6591234567"}},
            {("contact.phone_number", "json:$.contacts[*]")},
            id="a name as a key is not shown",
        ),
        pytest.param(
            {"daily": {"2024-01-15": 12, "2024-01-16": 9}},
            set(),
            id="trap: dates as keys",
        ),
    ],
)
def test_keys_that_are_identifiers_are_found_and_never_shown(body, expected):
    assert found(body) == expected
    inspection = inspect_call("POST", "https://api.example.com/", JSON, orjson.dumps(body))
    assert not any("@" in f.location or "91234567" in f.location for f in inspection.findings)


def test_ndjson_each_line_is_a_document():
    body = b'{"to": "+6591234567"}\n{"event": "x"}\n{"email": "a@example.com"}\n'
    headers = {"Content-Type": "application/x-ndjson"}
    assert found(body, headers=headers) == {
        ("contact.phone_number", "ndjson:0:$.to"),
        ("contact.email", "ndjson:2:$.email"),
    }


def test_json_in_the_declared_charset_is_decoded():
    body = '{"name_of_customer": "x", "phone": "+6591234567"}'.encode("utf-16")
    headers = {"Content-Type": "application/json; charset=utf-16"}
    assert ("contact.phone_number", "json:$.phone") in found(body, headers=headers)


def test_malformed_json_is_scanned_as_text_and_reported():
    body = (pathlib_data() / "malformed.json").read_bytes()
    inspection = inspect_call("POST", "https://api.example.com/", JSON, body)
    assert inspection.problems == (MALFORMED_JSON,)
    assert inspection.complete  # scanned as text: every byte was seen
    assert {(f.category, f.location) for f in inspection.findings} == {
        ("contact.phone_number", "text"),
        ("contact.email", "text"),
    }


def test_findings_never_carry_the_values():
    inspection = inspect_call(
        "POST",
        "https://api.example.com/",
        JSON,
        b'{"to": "+6591234567", "email": "mei@example.com"}',
    )
    dumped = orjson.dumps([f.as_dict() for f in inspection.findings]).decode()
    assert "91234567" not in dumped and "mei@" not in dumped


def pathlib_data():
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "data" / "inspect"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {"ChannelType": "SMS", "Address": "+6591234567", "OptOut": "ALL"},
            {
                ("contact.phone_number", "json:$.Address"),
                ("mobile.sms_consent", "json:$.OptOut"),
            },
            id="pinpoint endpoint: the channel says SMS, so its opt-out is SMS consent",
        ),
        pytest.param(
            {
                "Item": [
                    {"ChannelType": "EMAIL", "Address": "mei@example.com", "OptOut": "ALL"},
                    {"ChannelType": "sms", "Address": "+6591234567", "OptOut": "NONE"},
                ]
            },
            {
                ("contact.email", "json:$.Item[0].Address"),
                ("contact.phone_number", "json:$.Item[1].Address"),
                ("mobile.sms_consent", "json:$.Item[1].OptOut"),
            },
            id="a batch of one key set: each element's own channel decides",
        ),
        pytest.param(
            {"channel": "whatsapp", "opted_in": True, "user": {"opt_in_source": "web"}},
            {
                ("mobile.sms_consent", "json:$.opted_in"),
                ("mobile.sms_consent", "json:$.user.opt_in_source"),
            },
            id="a whatsapp channel, and the objects below it",
        ),
        pytest.param(
            {"channel": "C024BE91L", "opted_in": True, "text": "deploy done"},
            {("comms.content", "json:$.text")},
            id="trap: a chat channel's id says nothing",
        ),
    ],
)
def test_a_channel_value_makes_an_object_a_text_messages(body, expected):
    assert found(body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({"text": "STOP"}, True, id="STOP anywhere"),
        pytest.param({"body": " stop. "}, True, id="case, spaces and a full stop aside"),
        pytest.param({"message": "StopAll"}, True, id="STOPALL"),
        pytest.param({"text": "UNSTOP"}, True, id="UNSTOP opts back in"),
        pytest.param(
            {"from": "+6591234567", "text": "Unsubscribe"}, True, id="UNSUBSCRIBE in an sms"
        ),
        pytest.param({"from": "+6591234567", "text": "opt-out"}, True, id="OPT-OUT in an sms"),
        pytest.param({"from": "+6591234567", "text": "Yes"}, True, id="YES in an sms opts in"),
        pytest.param({"channel": "sms", "text": "cancel"}, True, id="CANCEL in an sms channel"),
        pytest.param({"from": "+6591234567", "text": "HELP"}, False, id="HELP is no consent"),
        pytest.param({"text": "Unsubscribe", "url": "https://x.example/u"}, False, id="a link"),
        pytest.param({"type": "button", "text": "Cancel"}, False, id="a button"),
        pytest.param({"text": "Reply STOP to opt out"}, False, id="a message that names STOP"),
        pytest.param({"error": {"message": "STOP"}}, False, id="an error's message"),
    ],
)
def test_a_message_that_is_only_an_opt_keyword_is_sms_consent(body, expected):
    categories = {category for category, _ in found(body)}
    assert ("mobile.sms_consent" in categories) is expected
    assert "comms.content" in categories or "error" in body


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {"external_id": "+14155550123", "user_id": "+65 9123 4567"},
            {
                ("contact.phone_number", "json:$.external_id"),
                ("contact.phone_number", "json:$.user_id"),
            },
            id="E.164 numbers as ids",
        ),
        pytest.param(
            {"userId": "mei.tan@example.com", "distinct_ids": ["+6591234567", "u_88213"]},
            {
                ("contact.email", "json:$.userId"),
                ("contact.phone_number", "json:$.distinct_ids[0]"),
            },
            id="an e-mail as a user id, a number in a list of ids",
        ),
        pytest.param(
            {
                "message_id": "20261130081245.1.8F2B@mg.qwiqi.example",
                "avatar_id": "icon@2x.png",
                "amount": "+6591234567",
                "user_id": "6591234567",
                "order_id": "+44",
            },
            set(),
            id="trap: a Message-Id, a file, an amount, digits without +, a code",
        ),
    ],
)
def test_a_number_or_address_used_as_an_id_is_found(body, expected):
    assert found(body) == expected


def test_a_pool_name_beside_a_notification_address_is_no_persons_name():
    body = {"name": "Primary Pool", "notification_email": "noc@qwiqi.example", "enabled": True}
    assert found(body) == {("contact.email", "json:$.notification_email")}
    person = {"name": "Mei Tan", "email": "mei@example.com"}
    assert ("contact.name", "json:$.name") in found(person)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {
                "properties": [
                    {"property": "firstname", "value": "Mei"},
                    {"property": "mobilephone", "value": "6591234567"},
                    {"property": "lifecyclestage", "value": "lead"},
                ]
            },
            {
                ("contact.name", "json:$.properties[0].value"),
                ("contact.phone_number", "json:$.properties[1].value"),
            },
            id="hubspot v1 property/value pairs",
        ),
        pytest.param(
            {
                "UserAttributes": [
                    {"Name": "given_name", "Value": "Mei"},
                    {"Name": "phone_number", "Value": "+6591234567"},
                ]
            },
            {
                ("contact.name", "json:$.UserAttributes[0].Value"),
                ("contact.phone_number", "json:$.UserAttributes[1].Value"),
            },
            id="cognito attribute Name/Value",
        ),
        pytest.param(
            {"values": [{"name": "Email Address", "value": "mei@example.com"}]},
            {("contact.email", "json:$.values[0].value")},
            id="a label in words",
        ),
        pytest.param(
            {
                "series": [{"name": "Jan", "value": 12}, {"name": "Mei Tan", "value": 4}],
                "Tags": [
                    {"Key": "Name", "Value": "sms-api-sg"},
                    {"Key": "order_id", "Value": "4155550123"},
                ],
                "fields": [{"name": "Customer ID", "value": "6591234567"}],
            },
            set(),
            id="trap: a chart's points, tags, an id's field",
        ),
        pytest.param(
            {"contact": {"name": "Mei Tan", "value": 1200}},
            {("contact.name", "json:$.contact.name")},
            id="a person's name beside a value is still a name",
        ),
    ],
)
def test_a_label_and_a_value_are_one_field(body, expected):
    assert found(body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {"notification": {"alert": "Your parcel arrives today"}},
            {("comms.content", "json:$.notification.alert")},
            id="a push alert's text",
        ),
        pytest.param(
            {"alert": {"enabled": True, "threshold": 5}}, set(), id="trap: alert settings"
        ),
        pytest.param(
            {"contents": {"en": "Your parcel arrives today"}},
            {("comms.content", "json:$.contents")},
            id="onesignal contents by language",
        ),
        pytest.param(
            {"custom_data": {"contents": [{"id": "plan-5g", "quantity": 1}], "value": 12.9}},
            set(),
            id="trap: meta and tiktok contents are the items bought",
        ),
        pytest.param(
            {"profileData": {"Phone": "+6591234567", "MSG-sms": True, "MSG-email": False}},
            {
                ("contact.phone_number", "json:$.profileData.Phone"),
                ("mobile.sms_consent", "json:$.profileData.MSG-sms"),
            },
            id="clevertap MSG-sms is an sms permission",
        ),
        pytest.param(
            {"traits": {"name": "Tan Logistics Pte Ltd", "industry": "Logistics"}},
            {("account.employment", "json:$.traits.name")},
            id="a company's name in a person's record",
        ),
        pytest.param(
            {"idDocument": "S1234567D", "phoneNumber": "+6591234567"},
            {
                ("government_id", "json:$.idDocument"),
                ("contact.phone_number", "json:$.phoneNumber"),
            },
            id="camara kyc idDocument",
        ),
        pytest.param(
            {"TemplateModel": {"name": "Mei Tan", "product_name": "QWIQI"}},
            {("contact.name", "json:$.TemplateModel.name")},
            id="a template model's name is the recipient's",
        ),
    ],
)
def test_second_round_formats(body, expected):
    assert found(body) == expected


def test_a_senders_company_mailbox_name_is_no_persons_name():
    body = {
        "from": {"email": "billing@qwiqi.example", "name": "QWIQI Billing"},
        "reply_to": {"email": "care@qwiqi.example", "name": "Acme Support"},
        "to": [{"email": "mei@example.com", "name": "Mei Tan"}],
    }
    assert {location for category, location in found(body) if category == "contact.name"} == {
        "json:$.to[0].name"
    }
    person = {"from": {"email": "mei@example.com", "name": "Mei Tan"}}
    assert ("contact.name", "json:$.from.name") in found(person)


def test_an_application_servers_address_is_no_persons():
    body = {
        "device": {"ipv4Address": {"publicAddress": "118.200.45.17"}},
        "applicationServer": {"ipv4Address": "52.74.23.10"},
    }
    assert found(body) == {("network.ip_address", "json:$.device.ipv4Address.publicAddress")}


def test_a_handsets_event_carries_its_carrier_country_and_location():
    event = {
        "idfa": "EA7583CD-A667-48BC-B806-42ECB2B48606",
        "carrier": "Singtel",
        "country": "Singapore",
        "location_lat": 1.2834,
        "location_lng": 103.8607,
    }
    assert found(event) == {
        ("mobile.device_id", "json:$.idfa"),
        ("mobile.carrier", "json:$.carrier"),
        ("location.country", "json:$.country"),
        ("location.precise", "json:$.location_lat"),
        ("location.precise", "json:$.location_lng"),
    }
    shipment = {"carrier": "DHL", "country": "SG", "location_lat": 1.2834}
    assert found(shipment) == set()
