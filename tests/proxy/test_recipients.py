"""Recipient resolution: exact, wildcard, port, IDN and public-suffix rules of host matching."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from sharewall.hosts import normalise_host
from sharewall.recipients import RecipientIndex
from sharewall.snapshot import Recipient, Snapshot


def _snapshot(**hosts: list[str]) -> Snapshot:
    return Snapshot(
        recipients=tuple(
            Recipient(id=rid, name=rid, kind="vendor", status="approved", hosts=tuple(patterns))
            for rid, patterns in hosts.items()
        )
    )


INDEX = RecipientIndex(
    _snapshot(
        twilio=["api.twilio.com", "*.twilio.com"],
        twilio_edge=["*.edge.twilio.com"],
        exact_port=["api.vendor.example:8443"],
        any_port=["api.vendor.example"],
        wild_port=["*.ports.example:444"],
        wild_any=["*.ports.example"],
        idn=["bücher.de"],
        sharp_s=["faß.de"],
        amazon=["*.amazonaws.com"],
        ip=["203.0.113.10"],
    )
)


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        pytest.param("api.twilio.com", 443, "twilio", id="exact name"),
        pytest.param("API.Twilio.COM", 443, "twilio", id="case is ignored"),
        pytest.param("api.twilio.com.", 443, "twilio", id="one trailing dot is ignored"),
        pytest.param("api.twilio.com..", 443, None, id="two trailing dots are invalid"),
        pytest.param("video.twilio.com", 443, "twilio", id="wildcard one label"),
        pytest.param("a.b.c.twilio.com", 443, "twilio", id="wildcard several labels"),
        pytest.param("twilio.com", 443, None, id="wildcard never matches the apex"),
        pytest.param("eviltwilio.com", 443, None, id="wildcard needs a label boundary"),
        pytest.param("twilio.com.evil.example", 443, None, id="suffix must be at the end"),
        pytest.param("sg.edge.twilio.com", 443, "twilio_edge", id="longest wildcard suffix wins"),
        pytest.param("edge.twilio.com", 443, "twilio", id="apex of longer wildcard falls back"),
        pytest.param("api.vendor.example", 8443, "exact_port", id="port-specific pattern wins"),
        pytest.param("api.vendor.example", 443, "any_port", id="any-port pattern otherwise"),
        pytest.param("a.ports.example", 444, "wild_port", id="port-specific wildcard wins"),
        pytest.param("a.ports.example", 443, "wild_any", id="any-port wildcard otherwise"),
        pytest.param("bücher.de", 443, "idn", id="unicode query matches IDN pattern"),
        pytest.param("BÜCHER.de", 443, "idn", id="unicode query is case folded"),
        pytest.param("xn--bcher-kva.de", 443, "idn", id="punycode query matches IDN pattern"),
        pytest.param("faß.de", 443, "sharp_s", id="idna 2008 pattern keeps sharp s"),
        pytest.param("fass.de", 443, None, id="idna 2003 mapping is another domain"),
        pytest.param("ec2.amazonaws.com", 443, "amazon", id="wildcard under a normal domain"),
        pytest.param(
            "bucket.s3.amazonaws.com", 443, None, id="wildcard never crosses a public suffix"
        ),
        pytest.param("203.0.113.10", 443, "ip", id="ip literal pattern"),
        pytest.param("198.0.113.10", 443, None, id="an unregistered ip literal"),
        pytest.param("unknown.example", 443, None, id="unknown host"),
        pytest.param("", 443, None, id="empty host"),
        pytest.param("bad host", 443, None, id="invalid host"),
    ],
)
def test_resolve(host: str, port: int, expected: str | None) -> None:
    found = INDEX.resolve(host, port)
    assert (found.id if found else None) == expected


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param("*.com", id="tld"),
        pytest.param("*.co.uk", id="icann two-label suffix"),
        pytest.param("*.github.io", id="private suffix"),
        pytest.param("*.s3.amazonaws.com", id="private multi-label suffix"),
        pytest.param("*.internal", id="single label"),
    ],
)
def test_wildcard_over_public_suffix_is_rejected_with_a_warning(pattern: str) -> None:
    suffix = pattern[2:]
    with capture_logs() as logs:
        index = RecipientIndex(_snapshot(greedy=[pattern]))
    assert index.resolve(f"victim.{suffix}", 443) is None
    assert index.resolve(f"a.victim.{suffix}", 443) is None
    assert len(index) == 0
    assert [e["event"] for e in logs] == ["recipients.pattern_rejected"]
    assert logs[0]["recipient_id"] == "greedy"


def test_first_recipient_keeps_a_contested_host() -> None:
    with capture_logs() as logs:
        index = RecipientIndex(_snapshot(first=["api.example.net"], second=["api.example.net"]))
    assert index.resolve("api.example.net", 443).id == "first"
    assert logs[0]["event"] == "recipients.host_conflict"
    assert logs[0]["kept_recipient_id"] == "first"


def test_index_of_ten_thousand_recipients_builds_and_resolves() -> None:
    snapshot = _snapshot(
        **{f"r{i}": [f"api{i}.vendor{i}.example", f"*.v{i}.example"] for i in range(10_000)}
    )
    index = RecipientIndex(snapshot)
    assert len(index) == 20_000
    assert index.resolve("api9999.vendor9999.example", 443).id == "r9999"
    assert index.resolve("a.b.v5000.example", 443).id == "r5000"
    assert index.resolve("a.b.v10000.example", 443) is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("Example.COM.", "example.com", id="case and trailing dot"),
        pytest.param("bücher.de", "xn--bcher-kva.de", id="idn to punycode"),
        pytest.param("faß.de", "xn--fa-hia.de", id="uts46 non-transitional"),
        pytest.param(
            "r3---sn-ab.googlevideo.com", "r3---sn-ab.googlevideo.com", id="double hyphen"
        ),
        pytest.param("_srv.example.com", "_srv.example.com", id="underscore label"),
        pytest.param("[2001:DB8::1]", "2001:db8::1", id="bracketed ipv6"),
        pytest.param("127.0.0.1", "127.0.0.1", id="ipv4 literal"),
    ],
)
def test_normalise_host(host: str, expected: str) -> None:
    assert normalise_host(host) == expected


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("", id="empty"),
        pytest.param(".", id="only a dot"),
        pytest.param("a..b", id="empty label"),
        pytest.param("-a.example", id="leading hyphen"),
        pytest.param("a b.example", id="space"),
        pytest.param("a" * 64 + ".example", id="label too long"),
        pytest.param("a." * 127 + "ab", id="name too long"),
        pytest.param("xn--zz.example\u00e9", id="invalid idn"),
        pytest.param("[::1", id="unbalanced bracket"),
    ],
)
def test_normalise_host_rejects(host: str) -> None:
    with pytest.raises(ValueError):
        normalise_host(host)


def test_answers_stay_right_past_the_remembered_lookups() -> None:
    # The index remembers a bounded number of (host, port) answers; asking more hosts than it
    # keeps, then the first ones again, must give the same answers as the first time.
    index = RecipientIndex(_snapshot(vendor=["*.vendor.example"], api=["api.other.example:443"]))
    hosts = [(f"h{i}.vendor.example", 443) for i in range(5000)] + [("unknown.example", 443)]
    first = [index.resolve(h, p) for h, p in hosts]
    again = [index.resolve(h, p) for h, p in hosts]
    assert [r.id if r else None for r in again] == [r.id if r else None for r in first]
    assert {r.id if r else None for r in again} == {"vendor", None}
    assert index.resolve("api.other.example", 443).id == "api"
    assert index.resolve("api.other.example", 8443) is None


def test_a_wildcard_over_ip_addresses_is_refused_by_the_schema() -> None:
    # "*.0.113.10" would read as a set of addresses; the registry refuses it outright (the
    # same parser as the proxy's, so the proxy can never be handed one).
    with pytest.raises(ValueError, match="wildcard cannot cover IP addresses"):
        Recipient(id="n", name="n", kind="vendor", status="approved", hosts=("*.0.113.10",))


def _recipient(rid: str, *hosts: str) -> Recipient:
    return Recipient(id=rid, name=rid, kind="vendor", status="approved", hosts=hosts)


PROBES = [
    ("api.a.example", 443),
    ("x.a.example", 443),
    ("api.b.example", 443),
    ("deep.x.b.example", 80),
    ("api.c.example", 8443),
    ("api.c.example", 443),
    ("api.shared.example", 443),
    ("api.new.example", 443),
]


def _answers(index: RecipientIndex) -> list[str | None]:
    found = [index.resolve(host, port) for host, port in PROBES]
    return [r.id if r is not None else None for r in found]


@pytest.mark.parametrize(
    ("change", "updated_in_place"),
    [
        pytest.param({"b": ("api.b2.example",)}, True, id="a recipient's hosts change"),
        pytest.param({"b": None}, True, id="a recipient is removed"),
        pytest.param({"n": ("api.new.example", "*.c.example")}, True, id="a recipient is added"),
        pytest.param({"c": ("api.c.example",)}, True, id="a port-specific pattern goes"),
        pytest.param({"a": ("api.a.example",)}, False, id="the holder of a contested name changes"),
        pytest.param({"n": ("api.b.example",)}, False, id="a new claim on a held name"),
    ],
)
async def test_an_updated_index_answers_as_a_fresh_one(change, updated_in_place: bool) -> None:
    from sharewall.recipients import updated_index

    before = Snapshot(
        recipients=(
            _recipient("a", "api.a.example", "*.a.example", "api.shared.example"),
            _recipient("b", "api.b.example", "*.b.example"),
            _recipient("c", "api.c.example:8443", "api.c.example"),
            _recipient("d", "api.shared.example"),  # loses api.shared.example to "a"
        )
    )
    kept = {r.id: r for r in before.recipients}
    for rid, hosts in change.items():
        if hosts is None:
            del kept[rid]
        else:
            kept[rid] = _recipient(rid, *hosts)
    after = Snapshot(recipients=tuple(kept[rid] for rid in sorted(kept)))
    old = RecipientIndex(before)
    old_answers = _answers(old)
    new = await updated_index(old, before, after)
    assert (new is not None) == updated_in_place
    if new is not None:
        assert _answers(new) == _answers(RecipientIndex(after))
    assert _answers(old) == old_answers  # the old index, still serving calls, is untouched
