"""Destination safety: every forbidden address class, literal forms, pins and the proxy itself."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket

import pytest

from proxy.destinations import (
    DestinationForbidden,
    DestinationMismatch,
    Resolver,
    classify_address,
    parse_ip_literal,
)
from sharewall.hosts import parse_pin

FORBIDDEN = [
    pytest.param("127.0.0.1", "loopback", id="v4 loopback"),
    pytest.param("127.255.0.9", "loopback", id="v4 loopback range"),
    pytest.param("10.1.2.3", "private", id="rfc1918 10/8"),
    pytest.param("172.16.0.1", "private", id="rfc1918 172.16/12"),
    pytest.param("172.31.255.255", "private", id="rfc1918 172.16/12 top"),
    pytest.param("192.168.1.1", "private", id="rfc1918 192.168/16"),
    pytest.param("100.64.0.1", "cgnat", id="cgnat"),
    pytest.param("100.127.255.254", "cgnat", id="cgnat top"),
    pytest.param("169.254.1.1", "link_local", id="v4 link-local"),
    pytest.param("169.254.169.254", "metadata", id="aws gcp metadata"),
    pytest.param("168.63.129.16", "metadata", id="azure wireserver"),
    pytest.param("100.100.100.200", "metadata", id="alibaba metadata"),
    pytest.param("0.0.0.0", "unspecified", id="v4 unspecified"),
    pytest.param("0.1.2.3", "unspecified", id="this network 0/8"),
    pytest.param("224.0.0.1", "multicast", id="v4 multicast"),
    pytest.param("239.255.255.250", "multicast", id="v4 multicast ssdp"),
    pytest.param("255.255.255.255", "broadcast", id="broadcast"),
    pytest.param("240.0.0.1", "reserved", id="class e"),
    pytest.param("192.0.0.192", "reserved", id="ietf protocol assignments"),
    pytest.param("192.0.2.1", "reserved", id="documentation test-net-1"),
    pytest.param("198.18.0.1", "reserved", id="benchmarking"),
    pytest.param("::1", "loopback", id="v6 loopback"),
    pytest.param("::", "unspecified", id="v6 unspecified"),
    pytest.param("fe80::1", "link_local", id="v6 link-local"),
    pytest.param("febf::1", "link_local", id="v6 link-local top"),
    pytest.param("fec0::1", "site_local", id="v6 site-local"),
    pytest.param("fc00::1", "ula", id="ula fc"),
    pytest.param("fd12:3456::1", "ula", id="ula fd"),
    pytest.param("fd00:ec2::254", "metadata", id="aws v6 metadata"),
    pytest.param("ff02::1", "multicast", id="v6 multicast"),
    pytest.param("2001:db8::1", "reserved", id="v6 documentation"),
    pytest.param("::ffff:127.0.0.1", "ipv4_mapped", id="mapped loopback"),
    pytest.param("::ffff:169.254.169.254", "ipv4_mapped", id="mapped metadata"),
    pytest.param("::ffff:10.0.0.1", "ipv4_mapped", id="mapped private"),
    pytest.param("64:ff9b::7f00:1", "nat64", id="nat64 loopback"),
    pytest.param("64:ff9b::a9fe:a9fe", "nat64", id="nat64 metadata"),
    pytest.param("64:ff9b:1::808:808", "nat64", id="local-use nat64"),
    pytest.param("2002:7f00:1::", "6to4", id="6to4 loopback"),
    pytest.param("2002:c0a8:101::1", "6to4", id="6to4 private"),
    pytest.param("2001:0:4136:e378:8000:63bf:80ff:fffe", "teredo", id="teredo client loopback"),
    pytest.param("::127.0.0.1", "reserved", id="deprecated ipv4-compatible"),
]

PUBLIC = [
    pytest.param("8.8.8.8", id="v4 public"),
    pytest.param("1.1.1.1", id="v4 public 2"),
    pytest.param("172.32.0.1", id="just above 172.16/12"),
    pytest.param("100.128.0.1", id="just above cgnat"),
    pytest.param("2606:4700::1111", id="v6 public"),
    pytest.param("::ffff:8.8.8.8", id="mapped public"),
    pytest.param("64:ff9b::808:808", id="nat64 public"),
    pytest.param("2002:808:808::1", id="6to4 public"),
]


@pytest.mark.parametrize(("address", "detail"), FORBIDDEN)
def test_forbidden_address_class(address: str, detail: str) -> None:
    assert classify_address(ipaddress.ip_address(address)) == detail


@pytest.mark.parametrize("address", PUBLIC)
def test_public_address_is_allowed(address: str) -> None:
    assert classify_address(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("127.0.0.1", "127.0.0.1", id="dotted"),
        pytest.param("0177.0.0.1", "127.0.0.1", id="octal"),
        pytest.param("0x7f.1", "127.0.0.1", id="hex short"),
        pytest.param("0x7F000001", "127.0.0.1", id="hex integer"),
        pytest.param("2130706433", "127.0.0.1", id="decimal integer"),
        pytest.param("127.1", "127.0.0.1", id="two parts"),
        pytest.param("10.1.1", "10.1.0.1", id="three parts"),
        pytest.param("0251.0376.0251.0376", "169.254.169.254", id="octal metadata"),
        pytest.param("0", "0.0.0.0", id="zero"),
        pytest.param("127.0.0.1.", "127.0.0.1", id="trailing dot"),
        pytest.param("[::1]", "::1", id="bracketed v6"),
        pytest.param("::ffff:7f00:1", "::ffff:7f00:1", id="bare v6"),
        pytest.param("api.example.com", None, id="name"),
        pytest.param("1.2.3.example", None, id="numeric labels then a name"),
        pytest.param("0x7f.example", None, id="hex label then a name"),
    ],
)
def test_parse_ip_literal(host: str, expected: str | None) -> None:
    parsed = parse_ip_literal(host)
    assert (str(parsed) if parsed is not None else None) == expected


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("256.0.0.1", id="octet too large"),
        pytest.param("1.2.3.4.5", id="five parts"),
        pytest.param("08.0.0.1", id="invalid octal digit"),
        pytest.param("4294967296", id="integer too large"),
        pytest.param("127.16777216", id="last part too large"),
        pytest.param("[fe80::1%eth0]", id="zone id"),
        pytest.param("fe80::1%25eth0", id="encoded zone id"),
        pytest.param("[::1", id="unbalanced bracket"),
        pytest.param("[127.0.0.1]", id="v4 in brackets"),
    ],
)
def test_parse_ip_literal_rejects(host: str) -> None:
    with pytest.raises(ValueError):
        parse_ip_literal(host)


@pytest.mark.parametrize(
    ("host", "detail"),
    [
        pytest.param("0177.0.0.1", "loopback", id="octal loopback"),
        pytest.param("0x7f.1", "loopback", id="hex loopback"),
        pytest.param("2130706433", "loopback", id="integer loopback"),
        pytest.param("0xa9fea9fe", "metadata", id="hex metadata"),
        pytest.param("[::ffff:127.0.0.1]", "ipv4_mapped", id="bracketed mapped loopback"),
        pytest.param("localhost", "loopback", id="localhost"),
        pytest.param("LocalHost.", "loopback", id="localhost with case and dot"),
        pytest.param("api.localhost", "loopback", id="name under localhost"),
        pytest.param("[fe80::1%eth0]", "invalid_host", id="zone id"),
        pytest.param("bad host", "invalid_host", id="invalid name"),
    ],
)
async def test_resolver_forbids_literals_and_localhost(host: str, detail: str) -> None:
    with pytest.raises(DestinationForbidden) as caught:
        await Resolver().resolve(host, 443)
    assert caught.value.detail == detail
    assert caught.value.code == "DESTINATION_FORBIDDEN"


async def test_name_resolving_to_loopback_is_forbidden() -> None:
    # localhost.localdomain / the machine's own name resolve through getaddrinfo to loopback;
    # "ip6-localhost" is in Debian's /etc/hosts. Use whichever this machine resolves.
    for name in ("localhost.localdomain", "ip6-localhost", "ip6-loopback", socket.gethostname()):
        try:
            socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)
        except OSError:
            continue
        with pytest.raises(DestinationForbidden) as caught:
            await Resolver().resolve(name, 443)
        assert caught.value.address is not None
        assert caught.value.detail in {"loopback", "private", "link_local", "ula"}
        return
    pytest.skip("no name on this machine resolves to a local address")


@pytest.mark.parametrize("address", PUBLIC)
async def test_resolver_allows_public_literals(address: str) -> None:
    destination = await Resolver().resolve(address, 443)
    assert destination.address == str(ipaddress.ip_address(address))
    assert destination.pinned is False
    expected_family = socket.AF_INET if "." in address and ":" not in address else socket.AF_INET6
    assert destination.family == expected_family


async def test_pinned_name_passes_the_private_check() -> None:
    resolver = Resolver({("upstream.test", 8080): "127.0.0.1"})
    destination = await resolver.resolve("Upstream.Test.", 8080)
    assert (destination.address, destination.port, destination.pinned) == ("127.0.0.1", 8080, True)
    assert destination.family == socket.AF_INET


async def test_pin_applies_to_its_port_only() -> None:
    resolver = Resolver({("upstream.test", 8080): "127.0.0.1"})
    with pytest.raises((DestinationForbidden, OSError)):
        await resolver.resolve("upstream.test", 8081)


@pytest.mark.parametrize(
    ("pins", "self_addresses", "host", "port"),
    [
        pytest.param(
            {("loop.test", 15080): "127.0.0.1"},
            [("127.0.0.1", 15080)],
            "loop.test",
            15080,
            id="pinned to the listener",
        ),
        pytest.param(
            {("loop.test", 15080): "::ffff:127.0.0.1"},
            [("127.0.0.1", 15080)],
            "loop.test",
            15080,
            id="pinned to the listener via a mapped address",
        ),
        pytest.param(
            {("loop.test", 15080): "127.0.0.1"},
            [("0.0.0.0", 15080)],
            "loop.test",
            15080,
            id="listener on every address",
        ),
        pytest.param(
            {("127.0.0.1", 15080): "127.0.0.1"},
            [("127.0.0.1", 15080)],
            "127.0.0.1",
            15080,
            id="literal pinned to itself",
        ),
    ],
)
async def test_proxy_self_is_forbidden_even_when_pinned(
    pins: dict[tuple[str, int], str], self_addresses: list[tuple[str, int]], host: str, port: int
) -> None:
    resolver = Resolver(pins, self_addresses=self_addresses)
    with pytest.raises(DestinationForbidden) as caught:
        await resolver.resolve(host, port)
    assert caught.value.detail == "proxy_self"


async def test_another_port_of_the_proxy_host_is_not_self() -> None:
    resolver = Resolver({("up.test", 9000): "127.0.0.1"}, self_addresses=[("127.0.0.1", 15080)])
    assert (await resolver.resolve("up.test", 9000)).address == "127.0.0.1"


async def test_unresolvable_name_is_an_os_error() -> None:
    with pytest.raises(OSError):
        await Resolver(timeout=5).resolve("does-not-exist.invalid", 443)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("api.test:443:127.0.0.1", (("api.test", 443), "127.0.0.1"), id="v4"),
        pytest.param("API.Test.:80:[::1]", (("api.test", 80), "::1"), id="bracketed v6"),
        pytest.param("api.test:80:2001:DB8::1", (("api.test", 80), "2001:db8::1"), id="bare v6"),
    ],
)
def test_parse_pin(text: str, expected: tuple[tuple[str, int], str]) -> None:
    assert parse_pin(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("api.test:443", id="no address"),
        pytest.param("api.test::127.0.0.1", id="no port"),
        pytest.param(":443:127.0.0.1", id="no host"),
        pytest.param("api.test:0:127.0.0.1", id="port zero"),
        pytest.param("api.test:70000:127.0.0.1", id="port too large"),
        pytest.param("api.test:443:not-an-ip", id="address is a name"),
        pytest.param("api.test:443:[::1", id="unbalanced bracket"),
        pytest.param("api.test:443:fe80::1%eth0", id="zone id"),
    ],
)
def test_parse_pin_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_pin(text)


class FakeDns:
    """A stand-in for the system resolver (DNS is not ours): answers from a script, counts lookups.

    `answers` holds one entry per lookup, the last one repeating: a list of addresses, or an
    `OSError` to raise.
    """

    def __init__(self, *answers: list[str] | OSError) -> None:
        self.answers = list(answers)
        self.lookups: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        self.lookups.append((host, port))
        answer = self.answers[min(len(self.lookups), len(self.answers)) - 1]
        if isinstance(answer, OSError):
            raise answer
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (a, port),
            )
            for a in answer
        ]


PUBLIC_A, PUBLIC_B = "8.8.8.8", "1.1.1.1"


async def test_name_resolved_once_is_not_resolved_again_within_the_ttl() -> None:
    dns = FakeDns([PUBLIC_A], [PUBLIC_B])
    resolver = Resolver(getaddrinfo=dns, dns_ttl=30)
    first = await resolver.resolve("api.example.com", 443)
    second = await resolver.resolve("api.example.com", 443)
    assert dns.lookups == [("api.example.com", 443)]
    assert first.address == second.address == PUBLIC_A


async def test_forbidden_outcome_is_cached_too() -> None:
    # One forbidden address among public ones forbids the name, and keeps forbidding it.
    dns = FakeDns([PUBLIC_A, "169.254.169.254"], [PUBLIC_A])
    resolver = Resolver(getaddrinfo=dns, dns_ttl=30)
    for _ in range(2):
        with pytest.raises(DestinationForbidden) as caught:
            await resolver.resolve("rebind.example.com", 443)
        assert (caught.value.detail, caught.value.address) == ("metadata", "169.254.169.254")
    assert len(dns.lookups) == 1


async def test_expired_outcome_is_resolved_and_every_address_checked_again() -> None:
    # A rebinding name: public first, then the metadata service. After the TTL the new answer
    # is classified like the first one was.
    dns = FakeDns([PUBLIC_A], [PUBLIC_A, "169.254.169.254"])
    resolver = Resolver(getaddrinfo=dns, dns_ttl=0.05)
    assert (await resolver.resolve("rebind.example.com", 443)).address == PUBLIC_A
    await asyncio.sleep(0.1)
    with pytest.raises(DestinationForbidden) as caught:
        await resolver.resolve("rebind.example.com", 443)
    assert caught.value.detail == "metadata"
    assert len(dns.lookups) == 2


async def test_cached_answers_what_resolve_would_without_a_lookup() -> None:
    dns = FakeDns([PUBLIC_A], [PUBLIC_A, "169.254.169.254"])
    resolver = Resolver(getaddrinfo=dns, dns_ttl=0.05)
    assert resolver.cached("rebind.example.com", 443) is None  # not resolved yet
    first = await resolver.resolve("rebind.example.com", 443)
    assert resolver.cached("rebind.example.com", 443) == first
    await asyncio.sleep(0.1)
    assert resolver.cached("rebind.example.com", 443) is None  # stale: resolve() looks it up
    with pytest.raises(DestinationForbidden):
        await resolver.resolve("rebind.example.com", 443)
    with pytest.raises(DestinationForbidden) as caught:
        resolver.cached("rebind.example.com", 443)  # a forbidden outcome, as resolve() raises it
    assert caught.value.detail == "metadata"
    assert len(dns.lookups) == 2


@pytest.mark.parametrize(
    ("dns_ttl", "answers", "lookups"),
    [
        pytest.param(0, ([PUBLIC_A], [PUBLIC_B]), 2, id="ttl 0 resolves every call"),
        pytest.param(
            30, (socket.gaierror("temporary failure"), [PUBLIC_B]), 2, id="a failure is not cached"
        ),
    ],
)
async def test_uncached_outcomes_are_resolved_again(
    dns_ttl: float, answers: tuple[list[str] | OSError, ...], lookups: int
) -> None:
    dns = FakeDns(*answers)
    resolver = Resolver(getaddrinfo=dns, dns_ttl=dns_ttl)
    with contextlib.suppress(OSError):
        await resolver.resolve("api.example.com", 443)
    assert (await resolver.resolve("api.example.com", 443)).address == PUBLIC_B
    assert len(dns.lookups) == lookups


async def test_names_of_another_port_are_resolved_separately() -> None:
    dns = FakeDns([PUBLIC_A])
    resolver = Resolver(getaddrinfo=dns, dns_ttl=30)
    await resolver.resolve("api.example.com", 443)
    await resolver.resolve("api.example.com", 8443)
    assert dns.lookups == [("api.example.com", 443), ("api.example.com", 8443)]


async def test_pins_and_literals_never_reach_dns() -> None:
    dns = FakeDns([PUBLIC_A])
    resolver = Resolver(
        {("up.test", 9000): "127.0.0.1"}, self_addresses=[("127.0.0.1", 15080)], getaddrinfo=dns
    )
    for _ in range(2):
        assert (await resolver.resolve("up.test", 9000)).pinned
        assert (await resolver.resolve(PUBLIC_B, 443)).address == PUBLIC_B
        with pytest.raises(DestinationForbidden):
            await resolver.resolve("127.0.0.1", 15080)
    assert dns.lookups == []


# -- transparent capture: the connected address must be one of the name's --------------------


async def test_connected_address_among_the_names_addresses_is_that_destination() -> None:
    dns = FakeDns([PUBLIC_A, PUBLIC_B])
    resolver = Resolver(getaddrinfo=dns, dns_ttl=30)
    destination = await resolver.resolve_at("api.example.com", 443, PUBLIC_B)
    assert (destination.host, destination.port, destination.address) == (
        "api.example.com",
        443,
        PUBLIC_B,
    )
    assert dns.lookups == [("api.example.com", 443)]


async def test_connected_address_not_of_the_name_is_a_mismatch() -> None:
    dns = FakeDns([PUBLIC_A])
    resolver = Resolver(getaddrinfo=dns, dns_ttl=30)
    with pytest.raises(DestinationMismatch) as caught:
        await resolver.resolve_at("api.example.com", 443, PUBLIC_B)
    assert caught.value.code == "DESTINATION_MISMATCH"
    assert caught.value.address == PUBLIC_B


async def test_cached_answer_without_the_address_is_refreshed_once() -> None:
    # The app may have resolved a newer rotation of the same name than our cached answer.
    dns = FakeDns([PUBLIC_A], [PUBLIC_B])
    resolver = Resolver(getaddrinfo=dns, dns_ttl=30)
    await resolver.resolve("api.example.com", 443)
    destination = await resolver.resolve_at("api.example.com", 443, PUBLIC_B)
    assert destination.address == PUBLIC_B
    assert len(dns.lookups) == 2
    with pytest.raises(DestinationMismatch):
        await resolver.resolve_at("api.example.com", 443, "9.9.9.9")
    assert len(dns.lookups) == 3  # refreshed once more, then refused


async def test_pinned_name_matches_only_its_pinned_address() -> None:
    resolver = Resolver({("up.test", 9000): "127.0.0.1"}, getaddrinfo=FakeDns(OSError("no dns")))
    destination = await resolver.resolve_at("up.test", 9000, "127.0.0.1")
    assert destination.pinned and destination.address == "127.0.0.1"
    with pytest.raises(DestinationMismatch):
        await resolver.resolve_at("up.test", 9000, "127.0.0.2")


async def test_name_of_a_forbidden_address_stays_forbidden_when_connected_to_it() -> None:
    resolver = Resolver(getaddrinfo=FakeDns(["10.1.2.3"]))
    with pytest.raises(DestinationForbidden):
        await resolver.resolve_at("internal.example.com", 443, "10.1.2.3")
