"""`/v1/keys` and `/healthz` over HTTP: admin JWT auth, per-client scope, instant revocation, error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sfu.auth.tokens import create_token
from sfu.errors import Unauthorized
from tests.support import Credentials, RunningServer


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(
    http: aiohttp.ClientSession, method: str, url: str, token: str | None, body: Any = None
) -> tuple[int, Any]:
    headers = bearer(token) if token is not None else {}
    async with http.request(method, url, headers=headers, json=body) as response:
        return response.status, await response.json()


def assert_error(status: int, body: Any, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    message = body["error"]["message"]
    assert message and not message[0].isupper() and not message.endswith(".")


async def test_healthz_answers_ok_without_auth(server: RunningServer, http: aiohttp.ClientSession) -> None:
    assert await call(http, "GET", f"{server.url}/healthz", None) == (200, {"status": "ok"})


async def test_a_secret_key_created_over_rest_signs_working_tokens(
    server: RunningServer, creds: Credentials, http: aiohttp.ClientSession
) -> None:
    status, body = await call(http, "POST", f"{server.url}/v1/keys", creds.admin_token(), {"type": "secret"})
    assert status == 201 and body["type"] == "secret" and body["cid"] == creds.cid
    assert body["secret"].startswith("sk_") and body["key_id"].startswith("k_")
    token = create_token(key_id=body["key_id"], secret=body["secret"], sid="room", uid="alice")
    identity = await server.server.auth.verify_token(token)
    assert identity.cid == creds.cid and identity.key_id == body["key_id"]


async def test_a_web_only_key_created_over_rest_carries_origins_grants_and_limit(
    server: RunningServer, creds: Credentials, http: aiohttp.ClientSession
) -> None:
    request = {
        "type": "web_only",
        "origins": ["https://*.example.com"],
        "grants": {"record": True, "publish": ["camera", "microphone"]},
        "max_participants": 4,
    }
    status, body = await call(http, "POST", f"{server.url}/v1/keys", creds.admin_token(), request)
    assert status == 201 and body["type"] == "web_only" and body["key"].startswith("wk_")
    assert body["origins"] == ["https://*.example.com"] and body["max_participants"] == 4
    assert body["grants"]["record"] is True and body["grants"]["publish"] == ["camera", "microphone"]
    identity = await server.server.auth.verify_web_key(
        body["key"], "https://meet.example.com", sid="room", uid="u1", name=None
    )
    assert identity.max_participants == 4 and not identity.grants.can_publish("screen")


async def test_list_shows_the_callers_keys_without_secrets(
    server: RunningServer, creds: Credentials, http: aiohttp.ClientSession
) -> None:
    status, body = await call(http, "GET", f"{server.url}/v1/keys", creds.admin_token())
    assert status == 200
    assert {k["cid"] for k in body["keys"]} == {creds.cid}
    assert creds.key_id in {k["key_id"] for k in body["keys"]}
    assert {k["type"] for k in body["keys"]} == {"secret", "web_only"}
    text = str(body)
    assert creds.secret not in text and creds.web_key not in text and "secret" not in body["keys"][0]


async def test_a_client_never_sees_or_revokes_another_clients_keys(
    server: RunningServer, creds: Credentials, http: aiohttp.ClientSession
) -> None:
    other = await server.credentials()
    _, mine = await call(http, "GET", f"{server.url}/v1/keys", creds.admin_token())
    _, theirs = await call(http, "GET", f"{server.url}/v1/keys", other.admin_token())
    assert not {k["key_id"] for k in mine["keys"]} & {k["key_id"] for k in theirs["keys"]}
    status, body = await call(http, "DELETE", f"{server.url}/v1/keys/{creds.key_id}", other.admin_token())
    assert_error(status, body, 404, "not_found")
    key = await server.server.store.get_key(creds.key_id)
    assert key is not None and not key.revoked


async def test_a_key_revoked_over_rest_stops_working_at_once(
    server: RunningServer, creds: Credentials, http: aiohttp.ClientSession
) -> None:
    _, created = await call(http, "POST", f"{server.url}/v1/keys", creds.admin_token(), {"type": "secret"})
    token = create_token(key_id=created["key_id"], secret=created["secret"], sid="room", uid="bob")
    await server.server.auth.verify_token(token)
    status, body = await call(
        http, "DELETE", f"{server.url}/v1/keys/{created['key_id']}", creds.admin_token()
    )
    assert (status, body) == (200, {"key_id": created["key_id"], "revoked": True})
    with pytest.raises(Unauthorized, match="revoked"):
        await server.server.auth.verify_token(token)
    _, listed = await call(http, "GET", f"{server.url}/v1/keys", creds.admin_token())
    assert {k["key_id"]: k["revoked"] for k in listed["keys"]}[created["key_id"]] is True


async def test_revoking_the_admins_own_key_ends_its_rest_access_at_once(
    server: RunningServer, creds: Credentials, http: aiohttp.ClientSession
) -> None:
    admin = creds.admin_token()
    status, _ = await call(http, "DELETE", f"{server.url}/v1/keys/{creds.key_id}", admin)
    assert status == 200
    status, body = await call(http, "GET", f"{server.url}/v1/keys", admin)
    assert_error(status, body, 401, "unauthorized")


async def test_missing_or_bad_credentials_get_the_protocol_error_shape(
    server: RunningServer, creds: Credentials, http: aiohttp.ClientSession
) -> None:
    url = f"{server.url}/v1/keys"
    assert_error(*(await call(http, "GET", url, None)), 401, "unauthorized")
    assert_error(*(await call(http, "GET", url, "not-a-jwt")), 401, "unauthorized")
    forged = create_token(
        key_id=creds.key_id, secret="sk_" + "0" * 43, sid=None, uid=None, grants={"admin": True}
    )
    assert_error(*(await call(http, "GET", url, forged)), 401, "unauthorized")
    join_token = creds.token("room", "alice")
    assert_error(*(await call(http, "GET", url, join_token)), 403, "forbidden")
    assert_error(*(await call(http, "POST", url, join_token, {"type": "secret"})), 403, "forbidden")


@pytest.mark.parametrize(
    "body",
    [
        {"type": "master"},
        {"type": "web_only"},
        {"type": "web_only", "origins": ["https://*"]},
        {"type": "web_only", "origins": ["https://example.com/path"]},
        {"type": "web_only", "origins": "https://example.com"},
        {"type": "web_only", "origins": ["https://example.com"], "grants": {"admin": True}},
        {"type": "web_only", "origins": ["https://example.com"], "grants": {"teleport": True}},
        {"type": "web_only", "origins": ["https://example.com"], "max_participants": 0},
        {"type": "secret", "origins": ["https://example.com"]},
        {"type": "secret", "algorithm": "ES256"},
        {"type": "secret", "color": "blue"},
        [1, 2],
    ],
)
async def test_bad_key_requests_are_bad_request(
    server: RunningServer, creds: Credentials, http: aiohttp.ClientSession, body: Any
) -> None:
    assert_error(
        *(await call(http, "POST", f"{server.url}/v1/keys", creds.admin_token(), body)), 400, "bad_request"
    )


async def test_a_body_that_is_not_json_is_bad_request(
    server: RunningServer, creds: Credentials, http: aiohttp.ClientSession
) -> None:
    headers = {**bearer(creds.admin_token()), "Content-Type": "application/json"}
    async with http.post(f"{server.url}/v1/keys", data=b"{nope", headers=headers) as response:
        assert_error(response.status, await response.json(), 400, "bad_request")


async def test_revoking_an_unknown_key_is_not_found(
    server: RunningServer, creds: Credentials, http: aiohttp.ClientSession
) -> None:
    assert_error(
        *(await call(http, "DELETE", f"{server.url}/v1/keys/k_nope", creds.admin_token())), 404, "not_found"
    )
