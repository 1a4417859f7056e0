"""XML and SOAP bodies, including the attacks defusedxml refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.inspect import inspect_call
from proxy.inspect.model import FORBIDDEN_XML, MALFORMED_XML

DATA = Path(__file__).resolve().parents[1] / "data" / "inspect"
XML = {"Content-Type": "text/xml; charset=utf-8"}

SOAP_SMS = b"""<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:s="urn:sms">
  <soap:Header><s:Auth><s:password>hunter2</s:password></s:Auth></soap:Header>
  <soap:Body>
    <s:sendSms>
      <s:msisdn>6591234567</s:msisdn>
      <s:sender>Acme</s:sender>
      <s:message>Your OTP expires in 5 minutes</s:message>
      <s:orderId>4155552671</s:orderId>
    </s:sendSms>
  </soap:Body>
</soap:Envelope>"""


def test_soap_sms_elements_are_found_by_their_path():
    inspection = inspect_call("POST", "https://sms.carrier.example/ws", XML, SOAP_SMS)
    assert inspection.complete
    assert {(f.category, f.location) for f in inspection.findings} == {
        ("contact.phone_number", "xml:/Envelope/Body/sendSms/msisdn"),
        ("comms.content", "xml:/Envelope/Body/sendSms/message"),
        ("credentials.secret", "xml:/Envelope/Header/Auth/password"),
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b'<req><param name="msisdn">447911123456</param><param name="ref">4155552671</param></req>',
            {("contact.phone_number", "xml:/req/param[@name='msisdn']")},
            id="named parameters",
        ),
        pytest.param(
            b'<subscriber msisdn="+6591234567" ip="93.184.216.34"><roaming>true</roaming></subscriber>',
            {
                ("contact.phone_number", "xml:/subscriber/@msisdn"),
                ("network.ip_address", "xml:/subscriber/@ip"),
                ("mobile.roaming_status", "xml:/subscriber/roaming"),
            },
            id="attributes",
        ),
    ],
)
def test_xml_shapes(body, expected):
    inspection = inspect_call(
        "POST", "https://x.example/", {"Content-Type": "application/xml"}, body
    )
    assert {(f.category, f.location) for f in inspection.findings} == expected


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("entity_bomb.xml", id="billion laughs"),
        pytest.param("external_entity.xml", id="external entity"),
    ],
)
def test_dtd_and_entities_are_refused_and_fail_closed(name):
    inspection = inspect_call("POST", "https://x.example/", XML, (DATA / name).read_bytes())
    assert inspection.problems == (FORBIDDEN_XML,)
    assert not inspection.complete


def test_malformed_xml_is_scanned_as_text():
    inspection = inspect_call(
        "POST", "https://x.example/", XML, (DATA / "malformed.xml").read_bytes()
    )
    assert inspection.problems == (MALFORMED_XML,)
    assert inspection.complete
    assert {(f.category, f.location) for f in inspection.findings} == {
        ("contact.phone_number", "text")
    }


@pytest.mark.parametrize(
    ("encoding", "content_type"),
    [
        pytest.param("ISO-8859-1", "text/xml; charset=iso-8859-1", id="latin-1 declared twice"),
        pytest.param("ISO-8859-1", "text/xml", id="latin-1 from the xml declaration"),
        pytest.param("UTF-16", "application/xml; charset=utf-16", id="utf-16"),
    ],
)
def test_xml_in_other_encodings(encoding, content_type):
    text = f'<?xml version="1.0" encoding="{encoding}"?><r><city>Köln</city><msisdn>+6591234567</msisdn></r>'
    inspection = inspect_call(
        "POST", "https://x.example/", {"Content-Type": content_type}, text.encode(encoding)
    )
    assert inspection.complete
    assert {(f.category, f.location) for f in inspection.findings} == {
        ("contact.phone_number", "xml:/r/msisdn")
    }
