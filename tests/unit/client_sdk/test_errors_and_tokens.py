"""Error codes map to typed exceptions; tokens carry exactly the claims of PROTOCOL.md."""

from __future__ import annotations

import json

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from client_sdk import errors
from client_sdk.admin import AdminClient
from client_sdk.tokens import create_admin_token, create_token
from client_sdk.wire import JsonObject

SECRET = "sk_" + "s" * 43


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("bad_request", errors.BadRequest),
        ("unauthorized", errors.Unauthorized),
        ("forbidden", errors.Forbidden),
        ("not_found", errors.NotFound),
        ("conflict", errors.Conflict),
        ("too_large", errors.TooLarge),
        ("rate_limited", errors.RateLimited),
        ("unavailable", errors.Unavailable),
        ("internal", errors.InternalError),
    ],
)
def test_each_wire_code_raises_its_own_exception(code: str, cls: type[errors.SfuError]) -> None:
    error = errors.error_from_wire(code, "token does not grant publish")
    assert type(error) is cls
    assert (error.code, error.message) == (code, "token does not grant publish")


def test_an_unknown_code_keeps_its_text_on_the_base_class() -> None:
    error = errors.error_from_wire("teapot", "short and stout")
    assert type(error) is errors.SfuError
    assert (error.code, error.message) == ("teapot", "short and stout")


def test_a_join_token_carries_the_protocol_claims_and_kid() -> None:
    token = create_token(
        "k_1",
        SECRET,
        "standup",
        "alice-1",
        ttl=600,
        name="Alice",
        grants={"publish": ["camera"]},
        policy={"subscribe": ["bob-*"]},
        description={"role": "host"},
        now=1_000_000,
    )
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT", "kid": "k_1"}
    claims = jwt.decode(token, SECRET.encode(), algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {
        "iss": "k_1",
        "sub": "alice-1",
        "sid": "standup",
        "iat": 1_000_000,
        "nbf": 1_000_000,
        "exp": 1_000_600,
        "name": "Alice",
        "grants": {"publish": ["camera"]},
        "policy": {"subscribe": ["bob-*"]},
        "description": {"role": "host"},
    }


def test_an_admin_token_has_the_admin_grant_and_no_sub_or_sid() -> None:
    token = create_admin_token("k_1", SECRET, now=1_000_000)
    claims = jwt.decode(token, SECRET.encode(), algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {
        "iss": "k_1",
        "iat": 1_000_000,
        "nbf": 1_000_000,
        "exp": 1_000_600,
        "grants": {"admin": True},
    }


@pytest.mark.parametrize("ttl", [0, -1, 24 * 3600 + 1])
def test_a_token_lifetime_outside_24_hours_is_refused(ttl: float) -> None:
    with pytest.raises(ValueError, match="24 h"):
        create_token("k_1", SECRET, "s", "u", ttl=ttl)


async def test_admin_client_maps_error_bodies_to_typed_exceptions() -> None:
    seen: list[JsonObject] = []

    async def kick(request: web.Request) -> web.Response:
        seen.append({"auth": request.headers["Authorization"], "path": request.path})
        body = {"error": {"code": "not_found", "message": "participant 'x' not found"}}
        return web.Response(status=404, text=json.dumps(body), content_type="application/json")

    async def teapot(_: web.Request) -> web.Response:
        return web.Response(status=429, text="slow down")

    app = web.Application()
    app.router.add_delete("/v1/sessions/{sid}/participants/{uid}", kick)
    app.router.add_get("/v1/sessions", teapot)
    async with (
        TestServer(app, host="127.0.0.1") as server,
        AdminClient(str(server.make_url("")), "t") as admin,
    ):
        with pytest.raises(errors.NotFound) as raised:
            await admin.kick("room 1", "x")
        assert raised.value.message == "participant 'x' not found"
        with pytest.raises(errors.RateLimited):
            await admin.list_sessions()
    assert seen == [{"auth": "Bearer t", "path": "/v1/sessions/room 1/participants/x"}]
