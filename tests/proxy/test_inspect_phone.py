"""Phone numbers under phone keys: national forms and the regions they are read in."""

from __future__ import annotations

import pytest

from proxy.inspect import inspect_call
from proxy.inspect.phone import is_phone_value


@pytest.mark.parametrize(
    "number",
    [
        pytest.param("4165550123", id="Toronto"),
        pytest.param("5145550123", id="Montreal"),
        pytest.param("8765550123", id="Jamaica"),
        pytest.param("6045550123", id="Vancouver (also +60 digits)"),
        pytest.param("5558675310", id="the documentation's 555 number"),
        pytest.param("(416) 555-0123", id="written with separators"),
    ],
)
def test_ten_digits_under_a_phone_key_are_a_north_american_number(number):
    # +1 is one plan of 25 regions: the `US` region's metadata alone leaves Canada and the
    # Caribbean out, and no other configured region should be what makes them numbers.
    assert is_phone_value(number, ("SG",), keyed=True)
    for body, form in ((b'{"to": "%s"}', False), (b"to=%s&text=Hi", True)):
        headers = [
            ("Content-Type", "application/x-www-form-urlencoded" if form else "application/json")
        ]
        inspection = inspect_call(
            "POST", "https://api.example.com/send", headers, body % number.encode()
        )
        assert "contact.phone_number" in inspection.categories


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("1234567890", id="an area code starting with 1"),
        pytest.param("0415550123", id="an area code starting with 0"),
        pytest.param("4151550123", id="an exchange starting with 1"),
    ],
)
def test_ten_digits_not_shaped_as_a_north_american_number_are_not_read_as_one(value):
    assert not is_phone_value(value, ("SG",), keyed=True)


def test_ten_digits_under_an_unrelated_key_are_not_a_number():
    assert not is_phone_value("4165550123", ("SG", "HK", "US", "GB"), keyed=False)
