"""Host, authority and URL parsing (`sharewall.hosts`): what the proxy accepts and the 400s it answers."""

from __future__ import annotations

import pytest

from sharewall.hosts import (
    BadAuthority,
    parse_authority,
    parse_host_pattern,
    parse_hostport,
    parse_service_url,
    parse_url,
    split_url,
)


def split_absolute_url(target: str) -> tuple[str, str, int, str]:
    t = parse_url(target)
    return t.scheme, t.host, t.port, t.path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("api.example.com:8443", ("api.example.com", 8443), id="host and port"),
        pytest.param("api.example.com", ("api.example.com", 443), id="default port"),
        pytest.param("API.Example.COM.:443", ("api.example.com", 443), id="normalised host"),
        pytest.param("bücher.de:443", ("xn--bcher-kva.de", 443), id="idn host"),
        pytest.param("[2001:DB8::1]:8443", ("2001:db8::1", 8443), id="bracketed ipv6 and port"),
        pytest.param("[::1]", ("::1", 443), id="bracketed ipv6 default port"),
        pytest.param("127.0.0.1:80", ("127.0.0.1", 80), id="ipv4 literal"),
        pytest.param("host:00443", ("host", 443), id="leading zeros in port"),
        pytest.param("host:65535", ("host", 65535), id="highest port"),
    ],
)
def test_parse_authority(text: str, expected: tuple[str, int]) -> None:
    assert parse_authority(text, default_port=443) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(":443", id="empty host"),
        pytest.param("[]:443", id="empty brackets"),
        pytest.param("host:", id="empty port"),
        pytest.param("host:0", id="port zero"),
        pytest.param("host:65536", id="port too large"),
        pytest.param("host:123456", id="port too long"),
        pytest.param("host:-1", id="negative port"),
        pytest.param("host:+80", id="signed port"),
        pytest.param("host:8o", id="non-digit port"),
        pytest.param("host:80:80", id="two ports"),
        pytest.param("[::1:443", id="unclosed bracket"),
        pytest.param("::1]:443", id="unopened bracket"),
        pytest.param("[::1]x", id="text after bracket"),
        pytest.param("[example.com]:443", id="name in brackets"),
        pytest.param("[::zz]:443", id="invalid ipv6"),
        pytest.param("::1", id="ipv6 without brackets"),
        pytest.param("[fe80::1%25eth0]:443", id="zone id"),
        pytest.param("user:pass@host:443", id="userinfo"),
        pytest.param("user@host", id="userinfo without password"),
        pytest.param("ho st:443", id="space"),
        pytest.param("host\t:443", id="tab"),
        pytest.param("host\r\nx:443", id="crlf"),
        pytest.param("host\x00:443", id="nul"),
        pytest.param("host/path:443", id="slash"),
        pytest.param("a..b:443", id="empty label"),
        pytest.param("bad_%41:443", id="percent encoding"),
    ],
)
def test_parse_authority_rejects(text: str) -> None:
    with pytest.raises(BadAuthority):
        parse_authority(text, default_port=443)


def test_rejection_message_does_not_echo_the_credentials() -> None:
    with pytest.raises(BadAuthority) as caught:
        parse_authority("alice:s3cret@host", default_port=443)
    assert "s3cret" not in str(caught.value)
    assert "userinfo" in str(caught.value)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param(
            "http://api.example.com/v1/send?x=1",
            ("http", "api.example.com", 80, "/v1/send?x=1"),
            id="http default port",
        ),
        pytest.param(
            "https://api.example.com:8443/v1",
            ("https", "api.example.com", 8443, "/v1"),
            id="https explicit port",
        ),
        pytest.param("HTTP://Example.com", ("http", "example.com", 80, "/"), id="empty path"),
        pytest.param("http://example.com?q=1", ("http", "example.com", 80, "/?q=1"), id="query"),
        pytest.param("http://example.com/a#frag", ("http", "example.com", 80, "/a"), id="fragment"),
        pytest.param("http://[::1]:8080/x", ("http", "::1", 8080, "/x"), id="ipv6"),
        pytest.param(
            "http://example.com/a@b", ("http", "example.com", 80, "/a@b"), id="at sign in path"
        ),
    ],
)
def test_split_absolute_url(target: str, expected: tuple[str, str, int, str]) -> None:
    assert split_absolute_url(target) == expected


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/relative/path", id="origin form"),
        pytest.param("ftp://example.com/", id="ftp"),
        pytest.param("ws://example.com/", id="websocket scheme"),
        pytest.param("http:///path", id="empty authority"),
        pytest.param("http://user:pw@example.com/", id="userinfo"),
        pytest.param("http://example.com:0/", id="port zero"),
        pytest.param("http://[::1/", id="unbalanced bracket"),
        pytest.param("http://example.com/a b", id="space in path"),
        pytest.param("http://example.com/a\r\nX: y", id="crlf in path"),
    ],
)
def test_split_absolute_url_rejects(target: str) -> None:
    with pytest.raises(BadAuthority):
        split_absolute_url(target)


def test_repeated_targets_keep_their_own_paths_and_refusals() -> None:
    # The authority of a repeated target is parsed once; its path is the request's each time,
    # and a bad authority is refused every time it comes.
    first = split_absolute_url("http://API.example.com:8080/v1/a?x=1")
    second = split_absolute_url("http://API.example.com:8080/v2/b")
    assert first == ("http", "api.example.com", 8080, "/v1/a?x=1")
    assert second == ("http", "api.example.com", 8080, "/v2/b")
    for _ in range(2):
        with pytest.raises(BadAuthority):
            split_absolute_url("http://user@api.example.com/v1")


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        pytest.param("API.Twilio.com.", "api.twilio.com", id="case and trailing dot"),
        pytest.param("*.Twilio.COM", "*.twilio.com", id="wildcard"),
        pytest.param("api.twilio.com:8443", "api.twilio.com:8443", id="port"),
        pytest.param("bücher.de", "xn--bcher-kva.de", id="idn as punycode"),
        pytest.param("_dmarc.example.com", "_dmarc.example.com", id="underscore label, as dns"),
        pytest.param("203.0.113.10", "203.0.113.10", id="ip literal"),
        pytest.param("[2001:DB8::1]:443", "[2001:db8::1]:443", id="ipv6 literal and port"),
    ],
)
def test_host_pattern_is_normalised_as_the_proxy_normalises_hosts(pattern: str, expected: str):
    assert str(parse_host_pattern(pattern)) == expected


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param("", id="empty"),
        pytest.param("*.", id="bare wildcard"),
        pytest.param("a.*.example.com", id="inner wildcard"),
        pytest.param("*.0.113.10", id="wildcard over addresses"),
        pytest.param("api.example.com:0", id="port zero"),
        pytest.param("api.example.com:99999", id="port too large"),
        pytest.param("user@api.example.com", id="userinfo"),
        pytest.param("api.example.com/v1", id="path"),
        pytest.param("-bad-.example.com", id="label with hyphens at the ends"),
    ],
)
def test_bad_host_patterns_are_refused(pattern: str):
    with pytest.raises(BadAuthority):
        parse_host_pattern(pattern)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("127.0.0.1:15080", ("127.0.0.1", 15080), id="ipv4"),
        pytest.param("[::1]:0", ("::1", 0), id="ipv6, ephemeral port"),
        pytest.param("0.0.0.0:15001", ("0.0.0.0", 15001), id="any address"),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int]):
    assert parse_hostport(text) == expected


@pytest.mark.parametrize("text", ["nowhere", ":80", "host:", "host:http", "::1:80"])
def test_bad_listen_addresses(text: str):
    with pytest.raises(BadAuthority):
        parse_hostport(text)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            "HTTPS://u:p@api.example.com:8443/v1/a?x=1#f",
            ("https", "u:p@api.example.com:8443", "/v1/a", "x=1", "f"),
            id="every part",
        ),
        pytest.param("http://h", ("http", "h", "", None, None), id="authority only"),
        pytest.param("http://h/?#", ("http", "h", "/", "", ""), id="empty query and fragment"),
        pytest.param("http://h#f?x", ("http", "h", "", None, "f?x"), id="? inside the fragment"),
        pytest.param("/p/+1415?q", ("", None, "/p/+1415", "q", None), id="origin form"),
        pytest.param("http://[::1/x", ("http", "[::1", "/x", None, None), id="not checked"),
        pytest.param("http://h/a\tb", ("http", "h", "/a\tb", None, None), id="controls kept"),
    ],
)
def test_split_url_is_lexical_and_never_raises(url: str, expected: tuple[object, ...]) -> None:
    assert tuple(split_url(url)) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            " http://proxy:pw@Registry.test.:8700/api/ ",
            ("http", "registry.test", 8700, "/api/"),
            id="userinfo dropped",
        ),
        pytest.param(
            "https://régistry.test", ("https", "xn--rgistry-bya.test", 443, "/"), id="idn"
        ),
        pytest.param("http://[::0001]", ("http", "::1", 80, "/"), id="ipv6"),
    ],
)
def test_service_url(url: str, expected: tuple[str, str, int, str]) -> None:
    assert tuple(parse_service_url(url)) == expected


def test_service_url_default_port_is_the_services_own_unless_the_url_names_one() -> None:
    assert parse_service_url("http://opa", default_port=8181).port == 8181
    assert parse_service_url("https://opa", default_port=8181).port == 8181
    assert parse_service_url("http://opa:80", default_port=8181).port == 80


@pytest.mark.parametrize(
    "url",
    ["registry.test:8700", "ftp://registry.test/", "http://u@", "http://registry.test:99999/"],
)
def test_service_url_rejects(url: str) -> None:
    with pytest.raises(BadAuthority):
        parse_service_url(url)
