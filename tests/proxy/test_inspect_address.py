"""Postal addresses typed into free text: two kinds of address signal together, never one alone."""

from __future__ import annotations

import orjson
import pytest

from proxy.inspect import inspect_call
from proxy.inspect.address import has_postal_address


def categories_of(doc: dict) -> set[str]:
    body = orjson.dumps(doc)
    headers = {"Content-Type": "application/json"}
    inspection = inspect_call("POST", "https://api.example.com/v1/tickets", headers, body)
    assert inspection.complete
    return {f.category for f in inspection.findings}


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            "Please send the replacement SIM to 1 Raffles Place, #20-61, Singapore 048616.",
            id="SG: street, unit and postal code",
        ),
        pytest.param("Deliver to Blk 123A Ang Mo Kio Ave 3 #05-12", id="SG: block and unit"),
        pytest.param("My address is 8 Jalan Besar, S(208787)", id="SG: jalan and S(postal)"),
        pytest.param(
            "Flat B, 12/F, Tower 2, 33 Canton Road, Tsim Sha Tsui, Kowloon",
            id="HK: flat, floor, district",
        ),
        pytest.param("Room 1203, Wing On House, Wan Chai", id="HK: room and district"),
        pytest.param(
            "ship it to 221 Baker Street, London NW1 6XE please", id="UK: street and postcode"
        ),
        pytest.param(
            "New address: 742 Evergreen Terrace, Springfield, IL 62704", id="US: street and ZIP"
        ),
        pytest.param("1600 Pennsylvania Ave, Apt 4B", id="US: street and apartment"),
    ],
)
def test_addresses_in_text_are_found(text: str) -> None:
    assert has_postal_address(text)
    assert "contact.postal_address" in categories_of({"comment": {"body": text}})


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            "Our office at 1 Raffles Place is closed on Friday.", id="trap: a building alone"
        ),
        pytest.param("Your order #12-3456 has shipped.", id="trap: an order number like a unit"),
        pytest.param("Meet us on Level 5 at 10:30.", id="trap: a floor in a meeting note"),
        pytest.param("We are hiring in Singapore and Kowloon.", id="trap: place names only"),
        pytest.param("Singapore 2024 roadmap: 5 Star Drive feature", id="trap: a year, no unit"),
        pytest.param("Flat rate plan, 20 GB for $15", id="trap: flat rate"),
        pytest.param(
            "Visit 10 Downing Street. Much later in this long message, far away from it, after "
            "a great many unrelated words that fill the space, there is Unit 7 of the course.",
            id="trap: two signals far apart",
        ),
        pytest.param("Your QWIQI PIN is 7731. Do not share it.", id="trap: an OTP message"),
    ],
)
def test_text_without_an_address_is_clean(text: str) -> None:
    assert not has_postal_address(text)
    assert "contact.postal_address" not in categories_of({"comment": {"body": text}})


def test_the_address_is_reported_at_the_text_field() -> None:
    text = "Please send the replacement SIM to 1 Raffles Place, #20-61, Singapore 048616."
    doc = {"ticket": {"subject": "Replacement SIM", "comment": {"body": text}}}
    headers = {"Content-Type": "application/json"}
    inspection = inspect_call(
        "POST", "https://x.zendesk.com/api/v2/tickets.json", headers, orjson.dumps(doc)
    )
    locations = {f.location for f in inspection.findings if f.category == "contact.postal_address"}
    assert locations == {"json:$.ticket.comment.body"}
