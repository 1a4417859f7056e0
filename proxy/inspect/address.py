"""Postal addresses typed into free text ("send it to 1 Raffles Place, #20-61, Singapore 048616").

An address is recognised only when two different kinds of address signal sit close together: a
street form, a unit, a postal code, a Hong Kong district. One signal alone is too common in
ordinary text ("our office at 1 Raffles Place", "order #12-345", "Level 5", "Central").
"""

from __future__ import annotations

import re

# Street forms: a house number then a capitalised street name and a street word, a Singapore
# block (`Blk 123A`), or a Malay street word (`Jalan Besar`, `Lorong 3 Geylang`).
_STREET = re.compile(
    r"\b\d{1,5}[A-Za-z]?,?\s+(?:[A-Z][A-Za-z'\-]+\s+){1,4}"
    r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Place|Pl|Way|Crescent|"
    r"Cres|Close|Court|Ct|Terrace|Walk|Square|Sq|Highway|Hwy)\b\.?"
    r"|\b(?:Blk|Block)\s*\d{1,4}[A-Za-z]?\b"
    r"|\b(?:Jalan|Lorong)\s+[A-Z0-9][A-Za-z0-9]*"
)
# Units: `#20-61` (Singapore), `Flat B`, `Room 1203`, `Unit 5`, `Apt 4B`, `Suite 300`, `12/F`.
_UNIT = re.compile(
    r"#\d{1,3}-\d{1,5}[A-Za-z]?\b"
    r"|\b(?:Flat|Room|Rm|Unit|Apt|Apartment|Suite)\.?\s*[A-Z0-9]{1,5}\b"
    r"|\b\d{1,3}/F\b"
)
# Postal codes in the shape each country writes them next to a city or state:
# `Singapore 048616` / `S(048616)`, `Springfield, IL 62704`, UK `SW1A 1AA`.
_POSTAL = re.compile(
    r"\bSingapore\s*\(?\d{6}\)?(?!\d)"
    r"|\bS\(\d{6}\)"
    r"|,\s*[A-Z]{2}\s+\d{5}(?:-\d{4})?\b"
    r"|\b(?:[A-Z]{1,2}\d[A-Z\d]?|GIR)\s+\d[ABD-HJLNP-UW-Z]{2}\b"
)
# Hong Kong has no postal codes: the district (or the territory) names the place.
_HK_DISTRICT = re.compile(
    r"\b(?:Kowloon|New Territories|Hong Kong Island|Mong Kok|Tsim Sha Tsui|Wan Chai|"
    r"Causeway Bay|Sheung Wan|Sham Shui Po|Kwun Tong|Sha Tin|Tsuen Wan|Tuen Mun|Yuen Long|"
    r"Tai Po|Quarry Bay|North Point|Aberdeen|Tseung Kwan O|Kwai Chung|Tung Chung|Hung Hom)\b"
)
_SIGNALS = (_UNIT, _POSTAL, _HK_DISTRICT, _STREET)  # the street form last: see below
_STREET_KIND = 3
# Two signals further apart than this are two things in one text, not one address.
_WINDOW = 120
# Cheap gate, run on every message body (regex alternations cost microseconds a text): an
# address has a `#` unit, a `/F` floor, or is written with commas before a capitalised part
# (`…, Singapore 048616`, `…Street, London NW1 6XE`, `…, IL 62704`, `…, Wan Chai`). The comma
# pattern starts with a literal, which `re` finds quickly. `free_text` inlines this test.
GATE = re.compile(r", [A-Z]")


def might_hold_address(text: str) -> bool:
    """The cheap necessary condition of `has_postal_address` (most texts fail it)."""
    return "#" in text or "/F" in text or GATE.search(text) is not None


def has_postal_address(text: str) -> bool:
    """True when `text` holds a postal address: two kinds of address signal close together."""
    if len(text) < 12 or not might_hold_address(text):
        return False
    found: list[tuple[int, int]] = []  # (position, kind)
    for kind, pattern in enumerate(_SIGNALS):
        if kind == _STREET_KIND and not found:
            return False  # a street form alone is never an address: skip the costly pattern
        for match in pattern.finditer(text):
            found.append((match.start(), kind))
    if len({kind for _, kind in found}) < 2:
        return False
    found.sort()
    for index, (position, kind) in enumerate(found):
        for other_position, other_kind in found[index + 1 :]:
            if other_position - position > _WINDOW:
                break
            if other_kind != kind:
                return True
    return False
