"""multipart/form-data bodies."""

from __future__ import annotations

from pathlib import Path

from proxy.inspect import inspect_call
from proxy.inspect.model import MALFORMED_MULTIPART

DATA = Path(__file__).resolve().parents[1] / "data" / "inspect"


def multipart(*parts: tuple[str, str | None, str | None, bytes], boundary: str = "b0und") -> bytes:
    out = b""
    for name, filename, content_type, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if content_type:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_fields_and_structured_parts_are_scanned():
    body = multipart(
        ("To", None, None, b"+6591234567"),
        ("Body", None, None, b"See you at 5"),
        ("meta", None, "application/json", b'{"customer": {"email": "mei@example.com"}}'),
        ("MediaUrl", None, None, b"https://cdn.example.com/a.png"),
        ("photo", "a.png", "image/png", b"\x89PNG\r\n+6591234567"),
        ("voicemail", "vm.wav", "audio/wav", b"RIFF...."),
        ("contacts", "contacts.csv", "text/csv", b"name,phone\nMei,+85291234567\n"),
    )
    headers = {"Content-Type": 'multipart/form-data; boundary="b0und"'}
    inspection = inspect_call("POST", "https://api.example.com/upload", headers, body)
    assert inspection.complete
    assert {(f.category, f.location) for f in inspection.findings} == {
        ("contact.phone_number", "multipart:To"),
        ("comms.content", "multipart:Body"),
        ("contact.email", "multipart:meta:json:$.customer.email"),
        ("comms.content", "multipart:voicemail"),
        ("contact.phone_number", "multipart:contacts"),
    }


def test_malformed_multipart_is_reported_and_scanned_as_text():
    headers = {"Content-Type": "multipart/form-data; boundary=XyZ"}
    body = (DATA / "malformed_multipart.txt").read_bytes()
    inspection = inspect_call("POST", "https://api.example.com/upload", headers, body)
    assert inspection.problems == (MALFORMED_MULTIPART,)
    assert {(f.category, f.location) for f in inspection.findings} == {
        ("contact.phone_number", "text")
    }


def test_multipart_without_boundary_is_malformed():
    headers = {"Content-Type": "multipart/form-data"}
    inspection = inspect_call("POST", "https://api.example.com/", headers, b"To=+6591234567")
    assert inspection.problems == (MALFORMED_MULTIPART,)
