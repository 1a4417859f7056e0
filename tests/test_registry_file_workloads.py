"""Registry as code, workloads: the `workloads:` list loads into the snapshot or fails naming the place."""

from pathlib import Path

import pytest

from sharewall.registry_file import (
    RegistryFileError,
    dump_registry_document,
    load_registry_file,
    parse_registry_document,
)
from sharewall.snapshot import Snapshot

RECIPIENTS = """
recipients:
  - id: twilio
    name: Twilio Inc.
    kind: ott_provider
    status: approved
    hosts: [api.twilio.com]
  - id: infobip
    name: Infobip Ltd.
    kind: ott_provider
    status: approved
    hosts: [api.infobip.com]
"""

WORKLOADS = """
workloads:
  - namespace: messaging
    name: sms-gateway
    status: approved
    purposes: [service_delivery]
    recipients: [twilio, infobip]
  - namespace: support
    name: support-app
    status: proposed
    purposes: [customer_support, troubleshooting]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(text)
    return path


def test_design_example_loads(tmp_path: Path):
    snapshot = load_registry_file(_write(tmp_path, RECIPIENTS + WORKLOADS))
    gateway = snapshot.workload("messaging", "sms-gateway")
    assert gateway is not None
    assert gateway.status == "approved"
    assert gateway.purposes == ("service_delivery",)
    assert gateway.recipients == ("twilio", "infobip")
    support = snapshot.workload("support", "support-app")
    assert support is not None and support.recipients is None and support.status == "proposed"
    assert snapshot.is_source_bound


def test_policy_data_keys_workloads_by_namespace_then_name(tmp_path: Path):
    data = load_registry_file(_write(tmp_path, RECIPIENTS + WORKLOADS)).policy_data()
    assert data["workloads"]["messaging"]["sms-gateway"] == {
        "namespace": "messaging",
        "name": "sms-gateway",
        "status": "approved",
        "purposes": ["service_delivery"],
        "recipients": ["twilio", "infobip"],
    }
    assert data["workloads"]["support"]["support-app"]["recipients"] is None


def test_without_workloads_source_binding_is_off_and_the_revision_is_unchanged(tmp_path: Path):
    plain = load_registry_file(_write(tmp_path, RECIPIENTS))
    assert plain.workloads == ()
    assert not plain.is_source_bound
    assert plain.policy_data()["workloads"] == {}
    # An empty `workloads:` key is the same registry as none at all.
    empty = load_registry_file(_write(tmp_path, RECIPIENTS + "workloads:\n"))
    assert empty.revision == plain.revision
    bound = load_registry_file(_write(tmp_path, RECIPIENTS + WORKLOADS))
    assert bound.revision != plain.revision


def test_revision_changes_with_a_workload_purpose(tmp_path: Path):
    first = load_registry_file(_write(tmp_path, RECIPIENTS + WORKLOADS)).revision
    changed = load_registry_file(
        _write(tmp_path, RECIPIENTS + WORKLOADS.replace("[service_delivery]", "[billing]"))
    ).revision
    assert first != changed


def test_dump_round_trips(tmp_path: Path):
    snapshot = load_registry_file(_write(tmp_path, RECIPIENTS + WORKLOADS))
    doc = dump_registry_document(snapshot)
    assert "recipients" not in doc["workloads"][1]  # absent = any recipient, not an empty list
    again = parse_registry_document(doc)
    assert again.workloads == snapshot.workloads
    assert again.revision == snapshot.revision


def test_snapshot_json_form_round_trips_with_workloads(tmp_path: Path):
    # The proxy receives the registry service's snapshot as JSON and validates it.
    snapshot = load_registry_file(_write(tmp_path, RECIPIENTS + WORKLOADS))
    again = Snapshot.from_json(snapshot.to_json())
    assert again.workloads == snapshot.workloads


def test_snapshot_refuses_duplicate_workloads():
    workload = {"namespace": "a", "name": "b", "status": "approved", "purposes": ["billing"]}
    with pytest.raises(ValueError, match="duplicate workload a/b"):
        Snapshot.from_data({"workloads": [workload, workload]})


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        pytest.param(
            WORKLOADS.replace("[service_delivery]", "[marketting]"),
            ["workload 'messaging/sms-gateway'", "purposes", "marketting"],
            id="unknown purpose names workload and field",
        ),
        pytest.param(
            WORKLOADS.replace("[service_delivery]", "[]"),
            ["workload 'messaging/sms-gateway'", "purposes", "at least one purpose"],
            id="no purposes",
        ),
        pytest.param(
            WORKLOADS.replace("[twilio, infobip]", "[twilio, vonage]"),
            ["workload 'messaging/sms-gateway'", "recipients", "vonage"],
            id="unknown recipient id",
        ),
        pytest.param(
            WORKLOADS.replace("[twilio, infobip]", "[]"),
            ["workload 'messaging/sms-gateway'", "recipients", "leave it out"],
            id="empty recipient list",
        ),
        pytest.param(
            WORKLOADS.replace("status: approved", "status: maybe"),
            ["workload 'messaging/sms-gateway'", "status"],
            id="unknown status",
        ),
        pytest.param(
            WORKLOADS.replace("namespace: messaging", "namespace: Messaging_NS"),
            ["workload 'Messaging_NS/sms-gateway'", "namespace", "Kubernetes namespace"],
            id="namespace not a DNS label",
        ),
        pytest.param(
            WORKLOADS.replace("name: sms-gateway", "name: sms gateway"),
            ["workload 'messaging/sms gateway'", "name", "Kubernetes name"],
            id="name not a DNS subdomain",
        ),
        pytest.param(
            WORKLOADS.replace("    name: sms-gateway\n", ""),
            ["workloads[0]", "name", "required"],
            id="missing name",
        ),
        pytest.param(
            WORKLOADS.replace("- namespace: messaging\n    name:", "- name:"),
            ["workload 'sms-gateway'", "namespace", "required"],
            id="missing namespace",
        ),
        pytest.param(
            WORKLOADS.replace("status: approved", "status: approved\n    owner: me"),
            ["workload 'messaging/sms-gateway'", "owner"],
            id="unknown field",
        ),
        pytest.param(
            WORKLOADS + WORKLOADS.split("workloads:\n")[1],
            ["workload 'messaging/sms-gateway'", "duplicate workload"],
            id="duplicate workload",
        ),
        pytest.param("workloads: {a: 1}\n", ["'workloads' must be a list"], id="not a list"),
        pytest.param("workloads:\n  - just a string\n", ["workloads[0]"], id="not a mapping"),
    ],
)
def test_bad_workload_is_one_line_naming_file_workload_and_field(
    tmp_path: Path, text: str, fragments: list[str]
):
    path = _write(tmp_path, RECIPIENTS + text)
    with pytest.raises(RegistryFileError) as excinfo:
        load_registry_file(path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message, message
