"""Deployment settings (flags and SFU_* variables) and the trusted-proxy rules for X-Forwarded-*."""

from __future__ import annotations

import argparse
import ipaddress

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sfu import config as cfg
from sfu.signaling.forwarded import client_address, forwarded_middleware


def parse(argv: list[str], env: dict[str, str] | None = None) -> cfg.Config:
    parser = argparse.ArgumentParser()
    cfg.add_arguments(parser)
    return cfg.load(parser.parse_args(argv), env or {})


@pytest.mark.parametrize(
    ("argv", "env", "field", "expected"),
    [
        (["--public-ip", "203.0.113.7"], {}, "public_ips", (("0.0.0.0", "203.0.113.7"),)),
        (["--nat-1to1", "10.0.0.5=203.0.113.7"], {}, "public_ips", (("10.0.0.5", "203.0.113.7"),)),
        ([], {"SFU_PUBLIC_IPS": "2001:db8::7,10.0.0.5=203.0.113.7"}, "public_ips",
         (("::", "2001:db8::7"), ("10.0.0.5", "203.0.113.7"))),
        (["--rtc-port-range", "50000-50100"], {}, "rtc_port_range", (50000, 50100)),
        ([], {"SFU_RTC_PORT_RANGE": "50000"}, "rtc_port_range", (50000, 50000)),
        ([], {}, "rtc_port_range", None),
        (["--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "127.0.0.1"], {}, "trusted_proxies",
         ("10.0.0.0/8", "127.0.0.1/32")),
        (["--ice-host", "::1"], {}, "ice_hosts", ("::1",)),
        ([], {"SFU_SHUTDOWN_TIMEOUT_S": "3"}, "shutdown_timeout_s", 3.0),
    ],
)
def test_deployment_settings_parse_from_flags_and_environment(
    argv: list[str], env: dict[str, str], field: str, expected: object
) -> None:
    assert getattr(parse(argv, env), field) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rtc-port-range", "50100-50000"], "invalid --rtc-port-range"),
        (["--rtc-port-range", "80-90"], "1024 <= LOW"),
        (["--public-ip", "10.0.0.5=2001:db8::7"], "one family"),
        (["--public-ip", "example.com"], "invalid --public-ip"),
        (["--trusted-proxy", "nope"], "invalid --trusted-prox"),
        (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
    ],
)
def test_bad_deployment_settings_are_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(cfg.ConfigError, match=message):
        parse(argv)


TRUSTED = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        ("127.0.0.1", "198.51.100.9", "198.51.100.9"),
        ("127.0.0.1", "6.6.6.6, 198.51.100.9, 10.1.2.3", "198.51.100.9"),  # spoofed first hop ignored
        ("127.0.0.1", None, "127.0.0.1"),
        ("192.0.2.1", "198.51.100.9", "192.0.2.1"),  # not a trusted proxy: header ignored
        ("127.0.0.1", "10.0.0.1, 10.0.0.2", "10.0.0.1"),
    ],
)
def test_the_client_address_is_the_rightmost_hop_that_is_not_a_trusted_proxy(
    peer: str, forwarded_for: str | None, expected: str
) -> None:
    assert client_address(peer, forwarded_for, TRUSTED) == expected


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"remote": request.remote, "scheme": request.scheme})


@pytest.mark.parametrize(
    ("proxies", "expected"),
    [(("127.0.0.1",), {"remote": "198.51.100.9", "scheme": "https"}),
     (("10.0.0.0/8",), {"remote": "127.0.0.1", "scheme": "http"})],
)
async def test_forwarded_headers_are_believed_only_from_a_trusted_proxy(
    proxies: tuple[str, ...], expected: dict[str, str]
) -> None:
    app = web.Application(middlewares=[forwarded_middleware(proxies)])
    app.router.add_get("/", echo)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        headers = {"X-Forwarded-For": "198.51.100.9", "X-Forwarded-Proto": "https"}
        response = await client.get("/", headers=headers)
        assert await response.json() == expected
