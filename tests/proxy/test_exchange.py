"""The exchange of one call: the facts derived from what the app sent."""

from __future__ import annotations

from proxy.exchange import Source, new_exchange

# (scheme, host, port, path) -> the URL the inspector reads: each after the others, so that an
# origin remembered from an earlier exchange cannot stand for another one's.
URLS = [
    (("http", "api.example", 80, "/v1/messages"), "http://api.example/v1/messages"),
    (("https", "api.example", 80, "/v1/messages"), "https://api.example:80/v1/messages"),
    (("http", "api.example", 8080, "/v1/messages"), "http://api.example:8080/v1/messages"),
    (
        ("https", "api.example", 443, "/v2?to=%2B6591234567"),
        "https://api.example/v2?to=%2B6591234567",
    ),
    (("http", "other.example", 80, "/v1/messages"), "http://other.example/v1/messages"),
    (("https", "2001:db8::1", 443, "/"), "https://[2001:db8::1]/"),
    (("https", "2001:db8::1", 8443, "/"), "https://[2001:db8::1]:8443/"),
    (("http", "api.example", 80, "/v1/messages"), "http://api.example/v1/messages"),
]


def test_the_url_inspected_is_the_calls_own_whichever_came_before() -> None:
    for (scheme, host, port, path), url in URLS:
        ex = new_exchange(
            "forward",
            "POST",
            scheme,
            host,
            port,
            path,
            raw_headers=[],
            index=None,
            source=Source(),
            default_purpose=None,
        )
        assert ex.url == url
