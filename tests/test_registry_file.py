"""Registry as code: the YAML file loads into a Snapshot or fails with one line naming the place."""

from datetime import date
from pathlib import Path

import pytest

from sharewall.hosts import normalise_host_pattern
from sharewall.registry_file import (
    RegistryFileError,
    dump_registry_document,
    load_registry_file,
    load_registry_file_sliced,
    parse_registry_document,
)
from sharewall.snapshot import Grant

VALID = """
recipients:
  - id: twilio
    name: Twilio Inc.
    kind: ott_provider
    status: approved
    regions: [US, SG]
    hosts: [api.twilio.com, "*.twilio.com"]
    tls_origination: false
    inspect_tls: true
    grants:
      - purpose: service_delivery
        categories: [contact.phone_number, comms.content]
        legal_basis: contract
        expires: 2027-12-31
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(text)
    return path


def test_design_example_loads(tmp_path: Path):
    snapshot = load_registry_file(_write(tmp_path, VALID))
    twilio = snapshot.recipient("twilio")
    assert twilio is not None
    assert twilio.hosts == ("api.twilio.com", "*.twilio.com")
    assert twilio.grants[0].expires == date(2027, 12, 31)
    assert snapshot.policy_data()["recipients"]["twilio"]["grants"][0]["expires"] == "2027-12-31"


def test_revision_is_stable_and_changes_with_content(tmp_path: Path):
    first = load_registry_file(_write(tmp_path, VALID)).revision
    again = load_registry_file(_write(tmp_path, VALID)).revision
    changed = load_registry_file(_write(tmp_path, VALID.replace("SG]", "HK]"))).revision
    assert first == again != changed


def test_dump_round_trips(tmp_path: Path):
    snapshot = load_registry_file(_write(tmp_path, VALID))
    again = parse_registry_document(dump_registry_document(snapshot))
    assert again.recipients == snapshot.recipients


BAD_FILES = [
    pytest.param(
        VALID.replace("purpose: service_delivery", "purpose: marketting"),
        ["recipient 'twilio'", "grants[0].purpose", "marketting"],
        id="unknown purpose names recipient and field",
    ),
    pytest.param(
        VALID.replace("comms.content]", "comms.contents]"),
        ["recipient 'twilio'", "grants[0].categories", "comms.contents"],
        id="unknown category",
    ),
    pytest.param(
        VALID.replace("kind: ott_provider", "kind: friend"),
        ["recipient 'twilio'", "kind"],
        id="unknown kind",
    ),
    pytest.param(
        VALID.replace("status: approved", "status: maybe"),
        ["recipient 'twilio'", "status"],
        id="unknown status",
    ),
    pytest.param(VALID.replace("[US, SG]", "[USA]"), ["regions", "USA"], id="region not alpha-2"),
    pytest.param(
        VALID.replace('"*.twilio.com"', '"*.*.twilio.com"'),
        ["hosts", "invalid host pattern"],
        id="double wildcard",
    ),
    pytest.param(
        VALID.replace("inspect_tls: true", "inspect_tls: true\n    colour: red"),
        ["recipient 'twilio'", "colour"],
        id="unknown field",
    ),
    pytest.param(VALID + VALID.split("recipients:\n")[1], ["duplicate"], id="duplicate id"),
    pytest.param("recipients: [\n", ["invalid YAML"], id="invalid yaml"),
    pytest.param("- just\n- a list\n", ["'recipients' list"], id="not a mapping"),
    pytest.param("recipients: []\nextra: 1\n", ["extra"], id="unknown top-level key"),
]


@pytest.mark.parametrize(("text", "fragments"), BAD_FILES)
def test_bad_file_is_one_line_naming_the_place(tmp_path: Path, text: str, fragments: list[str]):
    path = _write(tmp_path, text)
    with pytest.raises(RegistryFileError) as excinfo:
        load_registry_file(path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message


def test_missing_file_is_an_error(tmp_path: Path):
    with pytest.raises(RegistryFileError, match="no such file"):
        load_registry_file(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("API.Twilio.com.", "api.twilio.com"),
        ("*.Twilio.COM", "*.twilio.com"),
        ("api.twilio.com:8443", "api.twilio.com:8443"),
        ("bücher.de", "xn--bcher-kva.de"),
    ],
)
def test_host_patterns_are_normalised(pattern: str, expected: str):
    assert normalise_host_pattern(pattern) == expected


def test_expired_grant_grants_nothing_after_its_last_day():
    grant = Grant(purpose="billing", categories=("contact.email",), expires=date(2026, 1, 31))
    assert grant.is_active_on(date(2026, 1, 31))
    assert not grant.is_active_on(date(2026, 2, 1))


@pytest.fixture(params=["child process", "in process"])
def decoder(request, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the file decoded in the child process (as YAML always is) and in process
    (`split_document`'s path for a small JSON document)."""
    if request.param == "in process":
        monkeypatch.setattr("sharewall.document_split.INLINE_BYTES", {"yaml": 1 << 30})
    return request.param


WORKLOADS = """
workloads:
  - namespace: messaging
    name: sms-gateway
    status: approved
    purposes: [service_delivery]
    recipients: [twilio]
"""


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(VALID, id="design example"),
        pytest.param(VALID + WORKLOADS, id="with workloads"),
        pytest.param(
            (Path(__file__).parent.parent / "examples" / "registry.yaml").read_text(),
            id="examples/registry.yaml",
        ),
        pytest.param("recipients: []\n", id="empty"),
    ],
)
async def test_the_sliced_loader_gives_the_same_snapshot(tmp_path: Path, text: str, decoder):
    """What the proxy loads without holding its loop (child process, slices) is the same."""
    path = _write(tmp_path, text)
    whole, sliced = load_registry_file(path), await load_registry_file_sliced(path)
    assert sliced.revision == whole.revision
    assert sliced.replace(generated_at=whole.generated_at) == whole


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        *BAD_FILES,
        pytest.param(VALID + WORKLOADS.replace("[twilio]", "[nobody]"), [], id="unknown target"),
        pytest.param(VALID + "workloads: 3\n", [], id="workloads not a list"),
        pytest.param("", [], id="empty file"),
        pytest.param("recipients: [!!binary aGk=]\n", [], id="a YAML type JSON lacks"),
    ],
)
async def test_the_sliced_loader_fails_the_same_way(tmp_path: Path, text: str, fragments, decoder):
    path = _write(tmp_path, text)
    with pytest.raises(RegistryFileError) as whole:
        load_registry_file(path)
    with pytest.raises(RegistryFileError) as sliced:
        await load_registry_file_sliced(path)
    assert str(sliced.value) == str(whole.value)
