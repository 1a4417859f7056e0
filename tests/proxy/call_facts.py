"""A `Call` for decision tests: a Twilio message send unless overridden."""

from __future__ import annotations

from typing import Any

from proxy.decision import Call


def make_call(**overrides: Any) -> Call:
    """The facts of a Twilio Messages POST from the SMS gateway, with `overrides` applied."""
    fields: dict[str, Any] = {
        "method": "POST",
        "scheme": "https",
        "host": "api.twilio.com",
        "port": 443,
        "path": "/2010-04-01/Accounts/AC1/Messages.json",
        "inspected": True,
        "tls_upstream": True,
        "recipient_id": "twilio",
        "purpose": "service_delivery",
        "source_workload": "sms-gateway",
        "source_namespace": "messaging",
    }
    fields.update(overrides)
    return Call(**fields)
