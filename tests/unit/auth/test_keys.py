"""Origin patterns of web-only keys: parsing, normalization and the matching table."""

from __future__ import annotations

import pytest

from sfu.auth.keys import normalize_origin_patterns, origin_allowed, parse_origin, parse_origin_pattern
from sfu.errors import BadRequest

MATCHES = [
    # (pattern, origin header, allowed)
    ("https://example.com", "https://example.com", True),
    ("https://example.com", "https://EXAMPLE.com", True),
    ("https://example.com", "https://example.com:443", True),
    ("https://example.com:443", "https://example.com", True),
    ("http://localhost:8000", "http://localhost:8000", True),
    ("http://127.0.0.1:7880", "http://127.0.0.1:7880", True),
    ("https://example.com", "http://example.com", False),
    ("https://example.com", "https://example.com:8443", False),
    ("https://example.com", "https://www.example.com", False),
    ("https://example.com", "https://example.com.evil.net", False),
    ("http://localhost:8000", "http://localhost:8001", False),
    ("http://localhost:8000", "http://localhost", False),
    ("https://*.example.com", "https://a.example.com", True),
    ("https://*.example.com", "https://a.b.example.com", True),
    ("https://*.example.com", "https://A.Example.COM", True),
    ("https://*.example.com", "https://example.com", False),
    ("https://*.example.com", "https://evil-example.com", False),
    ("https://*.example.com", "https://aexample.com", False),
    ("https://*.example.com", "https://a.example.com.evil.net", False),
    ("https://*.example.com", "http://a.example.com", False),
    ("https://*.example.com", "https://a.example.com:8443", False),
    ("https://*.example.com:8443", "https://a.example.com:8443", True),
    ("https://*.example.com", "https://a.example.co", False),
    ("https://example.com", None, False),
    ("https://example.com", "null", False),
    ("https://example.com", "https://example.com/path", False),
    ("https://example.com", "", False),
]


@pytest.mark.parametrize(("pattern", "origin", "allowed"), MATCHES)
def test_origin_matching_follows_the_table(pattern: str, origin: str | None, allowed: bool) -> None:
    assert origin_allowed([pattern], origin) is allowed


@pytest.mark.parametrize(
    "junk",
    [
        "*",
        "https://*",
        "https://*.",
        "https://*.com",
        "https://a.*.example.com",
        "https://*example.com",
        "https://*.*.example.com",
        "https://example.com/path",
        "https://example.com?x=1",
        "https://example.com#frag",
        "https://user@example.com",
        "example.com",
        "ftp://example.com",
        "https://",
        "https://exa mple.com",
        "https://example.com:99999",
        "https://example.com:0",
        "https://*.10.0.0.1",
        " https://example.com",
        "",
    ],
)
def test_junk_origin_patterns_are_rejected_as_bad_request(junk: str) -> None:
    with pytest.raises(BadRequest):
        parse_origin_pattern(junk)


def test_patterns_are_normalized_and_deduplicated_for_storage() -> None:
    patterns = [
        "HTTPS://Example.COM:443",
        "https://example.com",
        "https://*.Example.com:8443/",
        "http://[::1]:80",
    ]
    assert normalize_origin_patterns(patterns) == (
        "https://example.com",
        "https://*.example.com:8443",
        "http://[::1]",
    )


def test_a_web_only_key_needs_at_least_one_origin() -> None:
    with pytest.raises(BadRequest, match="at least one origin"):
        normalize_origin_patterns([])


def test_a_bare_string_is_not_taken_for_a_list_of_origins() -> None:
    with pytest.raises(BadRequest, match="list"):
        normalize_origin_patterns("https://example.com")


def test_an_exact_origin_rejects_a_wildcard() -> None:
    with pytest.raises(BadRequest, match="wildcard"):
        parse_origin("https://*.example.com")


def test_ipv6_origins_match_with_brackets() -> None:
    assert origin_allowed(["http://[::1]:7880"], "http://[::1]:7880")
    assert not origin_allowed(["http://[::1]:7880"], "http://[::2]:7880")


def test_a_corrupt_stored_pattern_is_skipped_not_fatal() -> None:
    assert origin_allowed(["not an origin", "https://example.com"], "https://example.com")
