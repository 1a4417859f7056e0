"""The taxonomy file is the single source of truth: complete, consistent, loadable."""

import re
from pathlib import Path

import orjson
import pytest

from sharewall.taxonomy import TAXONOMY_RELPATH, load_taxonomy, policy_dir

DESIGN_CATEGORIES = 19
DESIGN_PURPOSES = 11


def test_taxonomy_has_every_design_category_purpose_and_kind():
    taxonomy = load_taxonomy()
    assert len(taxonomy.categories) == DESIGN_CATEGORIES
    assert len(taxonomy.purposes) == DESIGN_PURPOSES
    assert set(taxonomy.recipient_kinds) == {
        "carrier",
        "ott_provider",
        "vendor",
        "affiliate",
        "advertiser",
        "authority",
    }


def test_groups_name_only_known_ids():
    taxonomy = load_taxonomy()
    for members in taxonomy.category_groups.values():
        assert members <= set(taxonomy.categories)
    for members in taxonomy.purpose_groups.values():
        assert members <= set(taxonomy.purposes)
    assert taxonomy.purposes_allowed_abroad <= set(taxonomy.purposes)
    assert taxonomy.high_risk_kinds <= set(taxonomy.recipient_kinds)


def test_mobile_information_is_phone_plus_every_mobile_and_location_category():
    taxonomy = load_taxonomy()
    expected = {"contact.phone_number"} | {
        c for c in taxonomy.categories if c.startswith(("mobile.", "location."))
    }
    assert taxonomy.category_groups["mobile_information"] == expected


def test_every_category_has_a_fides_key():
    taxonomy = load_taxonomy()
    for category in taxonomy.categories:
        assert re.fullmatch(r"(user|system)(\.[a-z_]+)+", taxonomy.fides_key(category))


def test_reason_codes_are_the_design_vocabulary():
    codes = set(load_taxonomy().reason_codes)
    assert {
        "DESTINATION_FORBIDDEN",
        "DESTINATION_MISMATCH",
        "DESTINATION_UNIDENTIFIED",
        "PURPOSE_NOT_ALLOWED_FOR_SOURCE",
    } <= codes
    assert all(re.fullmatch(r"[A-Z_]+", c) for c in codes)
    assert len(codes) >= 16


def test_policy_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / TAXONOMY_RELPATH
    target.parent.mkdir(parents=True)
    target.write_bytes(orjson.dumps({"x": 1}))
    monkeypatch.setenv("SHAREWALL_POLICY_DIR", str(tmp_path))
    assert policy_dir() == tmp_path


def test_data_file_sits_where_opa_loads_it_as_data_sharewall_taxonomy():
    path = policy_dir() / "sharewall" / "taxonomy" / "data.json"
    assert path.is_file()
