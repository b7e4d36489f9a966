"""Pure parts of the socket and the webhook sender: token bucket, signature."""

from __future__ import annotations

import hashlib
import hmac

from sfu.signaling.webhooks import sign
from sfu.signaling.ws import TokenBucket


def test_token_bucket_allows_a_burst_then_the_sustained_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.1) is True
    assert bucket.take(0.1) is False
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_signature_is_the_hex_hmac_sha256_of_the_body() -> None:
    body = b'{"event":"x"}'
    assert sign(b"k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
