"""phonenumbers without its package `__init__` in the proxy: the inspector's findings, the
modules it keeps out, and the whole library for any other code in the process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_FRESH = """
import sys
import orjson
from proxy.inspect import inspect_call

def phones():
    body = orjson.dumps({"To": "+6591234567", "Body": "call me on +65 9123 4567"})
    found = inspect_call("POST", "/v1/sms", [("Content-Type", "application/json")], body)
    return sorted(f.location for f in found.findings if f.category == "contact.phone_number")

print(phones())
heavy = ("phonenumbers.asyoutypeformatter", "phonenumbers.phonenumbermatcher",
         "phonenumbers.shortnumberinfo", "phonenumbers.phonenumberutil")
print(sorted(m for m in heavy if m in sys.modules))

# Other code in the process still gets the whole library.
import phonenumbers

number = phonenumbers.parse("+6591234567")
print(phonenumbers.is_valid_number(number), phonenumbers.region_code_for_number(number))
print(len(list(phonenumbers.PhoneNumberMatcher("ring +65 9123 4567 now", "SG"))))
print(phones())
# The map the inspector reads from the generated data is the library's public one.
from proxy.inspect import phone
print(phone.COUNTRY_CODE_TO_REGION_CODE is phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
"""


def test_the_inspector_keeps_phonenumbers_extras_out_and_other_code_gets_the_whole_library() -> (
    None
):
    out = subprocess.run(
        [sys.executable, "-c", _FRESH], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout.splitlines()
    found = str(["json:$.Body", "json:$.To"])
    assert out == [found, "[]", "True SG", "1", found, "True"]


def test_the_warm_up_numbers_of_every_region_are_valid_to_the_inspector_and_the_library() -> None:
    import phonenumbers

    from proxy.inspect.phone import example_numbers, is_valid_international, is_valid_national

    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        numbers = example_numbers(region)
        if numbers is None:
            continue
        national, international = numbers
        assert is_valid_international(international[1:]), (region, international)
        assert is_valid_national(national, region), (region, national)
        assert phonenumbers.is_valid_number(phonenumbers.parse(national, region)), region
        assert (
            phonenumbers.format_number(
                phonenumbers.parse(national, region), phonenumbers.PhoneNumberFormat.E164
            )
            == international
        )
        checked += 1
    assert checked > 200
