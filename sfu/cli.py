"""`sfu serve|client|key|token`: run the server, manage clients and keys in the data dir, mint tokens offline.

Usage and config errors print one line `sfu: error: ...` and exit 2; a refused operation (not found,
conflict) exits 1. Every create/list command takes `--json` and then prints exactly one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import jwt
import orjson

from sfu import __version__, gc_tuning
from sfu.auth.identity import SOURCES, Grants
from sfu.auth.tokens import MAX_LIFETIME_S, check_claims, create_token
from sfu.config import Config, ConfigError, add_arguments, load
from sfu.errors import BadRequest, NotFound, SfuError
from sfu.recording.mix_cli import add_mix_parser
from sfu.store.base import KeyRecord, Store
from sfu.store.sqlite import SqliteStore

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


class UsageError(Exception):
    """A command line that cannot be run; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    except (UsageError, ConfigError, BadRequest) as exc:
        return _fail(str(exc), 2)
    except (SfuError, RuntimeError, OSError) as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130


def _fail(message: str, code: int) -> int:
    print(f"sfu: error: {message.splitlines()[0] if message else 'failed'}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sfu", description="A selective forwarding media server (SFU).")
    parser.add_argument("--version", action="version", version=f"sfu {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server")
    add_arguments(serve)
    serve.set_defaults(handler=cmd_serve)

    health = commands.add_parser("health", help="probe /healthz of the local server (health checks)")
    health.add_argument("--url", help="default: from SFU_HOST, SFU_PORT and SFU_TLS_CERT")
    health.add_argument("--ready", action="store_true", help="fail while draining too (readiness)")
    health.set_defaults(handler=cmd_health)

    client = commands.add_parser("client", help="manage clients").add_subparsers(dest="action", required=True)
    p = client.add_parser("create", help="create a client")
    p.add_argument("name")
    _store_options(p, cmd_client_create)
    _store_options(client.add_parser("list", help="list clients"), cmd_client_list)

    key = commands.add_parser("key", help="manage keys").add_subparsers(dest="action", required=True)
    p = key.add_parser("create", help="create a secret key (default) or a web-only key")
    p.add_argument("--client", required=True, metavar="CID", help="cid (or name) of the owning client")
    p.add_argument("--web-only", action="store_true", help="a wk_... key for browser pages, bound to origins")
    p.add_argument("--origin", action="append", default=[], metavar="URL", help="allowed origin (repeatable)")
    p.add_argument("--record", action=argparse.BooleanOptionalAction, default=False, help="web-only: record")
    p.add_argument("--grant", action="append", default=[], metavar="NAME=VALUE", help="web-only: a grant")
    p.add_argument("--max-participants", type=int, metavar="N", help="web-only: session size limit")
    p.add_argument("--algorithm", choices=("HS256", "ES256", "EdDSA"), default="HS256")
    p.add_argument("--public-key", type=Path, metavar="FILE", help="PEM public key for ES256/EdDSA")
    _store_options(p, cmd_key_create)
    p = key.add_parser("list", help="list the keys of a client")
    p.add_argument("--client", required=True, metavar="CID")
    _store_options(p, cmd_key_list)
    p = key.add_parser("revoke", help="revoke a key: it stops working at once")
    p.add_argument("key_id")
    _store_options(p, cmd_key_revoke)

    token_parser = commands.add_parser("token", help="mint or inspect JWTs")
    token = token_parser.add_subparsers(dest="action", required=True)
    p = token.add_parser("create", help="mint an HS256 token (offline)")
    p.add_argument("--key", required=True, metavar="KEY_ID")
    p.add_argument("--secret", required=True)
    p.add_argument("--session", metavar="SID")
    p.add_argument("--uid")
    p.add_argument("--ttl", type=_duration, default=3600.0, help="lifetime, e.g. 90s, 30m, 1h (max 24h)")
    p.add_argument("--name")
    p.add_argument("--description", type=_json_object, metavar="JSON")
    p.add_argument("--grant", action="append", default=[], metavar="NAME=VALUE", help="e.g. publish=false")
    p.add_argument("--policy-subscribe", action="append", metavar="GLOB", help="uids one may subscribe to")
    p.add_argument("--policy-message", action="append", metavar="GLOB", help="uids one may message")
    p.add_argument("--admin", action="store_true", help="grant admin (REST API); sid/uid become optional")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_token_create)
    p = token.add_parser("inspect", help="decode a token; verify it with --secret")
    p.add_argument("token")
    p.add_argument("--secret")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_token_inspect)
    _store_options(add_mix_parser(commands.add_parser("recording", help="work with recordings (offline)")),
                   cmd_recording_mix)
    return parser


def _store_options(p: argparse.ArgumentParser, handler: Callable[[argparse.Namespace], int]) -> None:
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="data directory (env SFU_DATA_DIR)")
    p.add_argument("--redis", dest="redis_url", metavar="URL",
                   help="a cluster's shared store instead of the data dir's SQLite (env SFU_REDIS_URL)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=handler)


# serve


def cmd_serve(args: argparse.Namespace) -> int:
    config = load(args)
    logging.basicConfig(level=config.log_level.upper(), format=LOG_FORMAT)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    workers = config.workers or len(os.sched_getaffinity(0)) or 1  # the cores this process may use
    with runner:
        if workers == 1 and config.redis_url is None:  # a Redis node always has a front (placement)
            runner.run(_serve(config))
        else:
            from sfu.cluster.serve import serve_cluster

            runner.run(serve_cluster(config, workers, _ssl_context(config), _print_banner))
    return 0


async def _serve(config: Config) -> None:
    """Runs until SIGTERM/SIGINT; SIGUSR1 starts draining (docs/deployment.md, graceful operations).

    Shutdown order: stop listening, end every session (`closed {reason:"server_shutdown",
    reconnect:true}`, close 1001), wait at most `shutdown_timeout_s` for sockets, then `Server.close()`
    (recordings are finalized there). A second SIGTERM/SIGINT exits at once.
    """
    from aiohttp import web

    from sfu.app import build_app
    from sfu.bootstrap import ensure_demo
    from sfu.server import SERVER_KEY

    ssl_context = _ssl_context(config)
    app = await build_app(config)
    server = app[SERVER_KEY]
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=config.shutdown_timeout_s)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            where = f"{config.host}:{config.port}"
            raise ConfigError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        port = int(runner.addresses[0][1])
        config = replace(config, port=port)
        demo = await ensure_demo(server.store, config)
        _print_banner(demo.to_json(), config)
        if not config.default_gc:
            gc_tuning.tune()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_stop() -> None:
            if stop.is_set():
                print("sfu: second signal, exiting at once", file=sys.stderr, flush=True)
                os._exit(1)
            stop.set()

        def on_drain() -> None:
            server.registry.drain()
            print("sfu: draining: new joins are refused, /healthz answers 503", flush=True)

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_stop)
        loop.add_signal_handler(signal.SIGUSR1, on_drain)
        await stop.wait()
        print("sfu: shutting down", flush=True)
        server.registry.drain()
    finally:
        await runner.cleanup()


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    """HTTPS/WSS served directly, for set-ups without a TLS-terminating proxy."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load --tls-cert/--tls-key: {exc}") from None
    return context


def _print_banner(demo: dict[str, Any], config: Config) -> None:
    scheme = "https" if config.tls_cert is not None else "http"
    lines = [
        f"sfu {__version__} listening on {scheme}://{config.host}:{config.port} (data dir {config.data_dir})",
        f"demo client    cid={demo['cid']}",
        f"secret key     key_id={demo['key_id']} secret={demo['secret']}",
        f"web-only key   key_id={demo['web_key_id']} key={demo['web_key']}",
        f"origins        {' '.join(demo['origins'])}",
        f"demo page      {demo['url']}",
    ]
    print("\n".join(lines), flush=True)


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when alive: `/healthz` answers 200, or 503 `draining` unless `--ready` (a draining server
    must not be restarted by its orchestrator, only taken out of rotation)."""
    import urllib.error
    import urllib.request

    url = args.url or _health_url(load(None))
    # NOTE: a local probe: the certificate names the public host, not 127.0.0.1
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return _fail(f"{url}: {getattr(exc, 'reason', exc)}", 1)
    try:
        parsed = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        parsed = {}
    state = str(parsed.get("status", "")) if isinstance(parsed, dict) else ""
    print(f"{status} {state}", flush=True)
    return 0 if status == 200 or (status == 503 and state == "draining" and not args.ready) else 1


def _health_url(config: Config) -> str:
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(config.host, config.host)
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if config.tls_cert is not None else "http"
    return f"{scheme}://{host}:{config.port}/healthz"


# store commands


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        return Path(args.data_dir)
    return Path(os.environ.get("SFU_DATA_DIR") or Config().data_dir)


def _run_with_store(args: argparse.Namespace, work: Callable[[Store], Awaitable[Any]]) -> Any:
    redis_url = getattr(args, "redis_url", None) or os.environ.get("SFU_REDIS_URL")

    async def run() -> Any:
        store: Store
        if redis_url:  # a cluster's shared store; master.key comes from the data dir as for SQLite
            from sfu.store.redis import RedisStore

            store = RedisStore(redis_url, _data_dir(args))
        else:
            store = SqliteStore(_data_dir(args))
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _emit(args: argparse.Namespace, body: dict[str, Any], text: str) -> int:
    print(orjson.dumps(body).decode() if args.json else text, flush=True)
    return 0


async def _resolve_client(store: Store, ref: str) -> str:
    client = await store.get_client(ref) or await store.find_client_by_name(ref)
    if client is None:
        raise NotFound(f"client {ref!r} not found")
    return client.cid


def cmd_client_create(args: argparse.Namespace) -> int:
    client = _run_with_store(args, lambda store: store.create_client(args.name))
    text = f"created client {client.name} cid={client.cid}"
    return _emit(args, {"cid": client.cid, "name": client.name}, text)


def cmd_client_list(args: argparse.Namespace) -> int:
    clients = _run_with_store(args, lambda store: store.list_clients())
    body = {"clients": [{"cid": c.cid, "name": c.name, "created_at": c.created_at} for c in clients]}
    text = "\n".join(f"{c.cid}  {c.name}" for c in clients) or "no clients"
    return _emit(args, body, text)


def cmd_key_create(args: argparse.Namespace) -> int:
    if not args.web_only and (args.origin or args.grant or args.max_participants is not None or args.record):
        raise UsageError("--origin, --grant, --record and --max-participants need --web-only")
    if args.web_only and (args.algorithm != "HS256" or args.public_key is not None):
        raise UsageError("--algorithm and --public-key apply to secret keys only")
    public_key = args.public_key.read_text() if args.public_key is not None else None

    async def work(store: Store) -> tuple[KeyRecord, str | None]:
        cid = await _resolve_client(store, args.client)
        if not args.web_only:
            return await store.create_secret_key(cid, args.algorithm, public_key)
        grants = Grants.from_wire(parse_grants(args.grant), base=Grants(record=args.record))
        return await store.create_web_key(cid, tuple(args.origin), grants, args.max_participants)

    record, secret = _run_with_store(args, work)
    body = {**record.to_wire(), "secret": secret}
    if record.type == "web_only":
        body["key"] = secret
    lines = [f"created {record.type} key key_id={record.key_id} cid={record.cid} ({record.algorithm})"]
    if record.origins:
        lines.append(f"origins: {', '.join(record.origins)}")
    if secret is not None:
        lines.append(f"{'secret' if record.type == 'secret' else 'key'}: {secret}")
        lines.append("it is shown only this once: store it now")
    return _emit(args, body, "\n".join(lines))


def cmd_key_list(args: argparse.Namespace) -> int:
    async def work(store: Store) -> list[KeyRecord]:
        return await store.list_keys(await _resolve_client(store, args.client))

    keys: list[KeyRecord] = _run_with_store(args, work)
    text = "\n".join(
        f"{k.key_id}  {k.type:<8}  {k.algorithm:<5}  {'revoked' if k.revoked else 'live':<7}  "
        + ",".join(k.origins)
        for k in keys
    )
    return _emit(args, {"keys": [k.to_wire() for k in keys]}, text or "no keys")


def cmd_key_revoke(args: argparse.Namespace) -> int:
    async def work(store: Store) -> None:
        if await store.get_key(args.key_id) is None:
            raise NotFound(f"key {args.key_id!r} not found")
        await store.revoke_key(args.key_id)

    _run_with_store(args, work)
    return _emit(args, {"key_id": args.key_id, "revoked": True}, f"revoked key {args.key_id}")


# tokens (offline)


def cmd_token_create(args: argparse.Namespace) -> int:
    if not args.admin and (args.session is None or args.uid is None):
        raise UsageError("--session and --uid are required (only --admin tokens may omit them)")
    grants = parse_grants(args.grant)
    if args.admin:
        grants["admin"] = True
    policy: dict[str, list[str]] = {}
    if args.policy_subscribe:
        policy["subscribe"] = args.policy_subscribe
    if args.policy_message:
        policy["message"] = args.policy_message
    now = time.time()
    token = create_token(
        key_id=args.key, secret=args.secret, sid=args.session, uid=args.uid, ttl_s=args.ttl, name=args.name,
        description=args.description, grants=grants or None, policy=policy or None, now=now,
    )
    return _emit(args, {"token": token, "expires_at": int(now) + int(args.ttl)}, token)


def cmd_recording_mix(args: argparse.Namespace) -> int:
    from sfu.recording.mix import find_recording, mix_recording

    record = _run_with_store(args, lambda store: find_recording(store, args.recording_id))
    if record is None:
        raise NotFound(f"recording {args.recording_id} not found")
    try:
        result = mix_recording(record, _data_dir(args), args.out, args.size, args.fps)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return _emit(args, result.to_wire(), result.describe())


def cmd_token_inspect(args: argparse.Namespace) -> int:
    try:
        header = jwt.get_unverified_header(args.token)
        claims = jwt.decode(args.token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise UsageError(f"not a JWT: {exc}") from None
    now = time.time()
    exp = claims.get("exp")
    expired = not isinstance(exp, int | float) or exp <= now
    signature = "not checked"
    if args.secret is not None:
        if header.get("alg") != "HS256":
            raise UsageError("--secret verifies HS256 tokens only")
        try:
            jwt.decode(args.token, args.secret.encode(), algorithms=["HS256"], options={"verify_exp": False})
            signature = "valid"
        except jwt.PyJWTError:
            signature = "invalid"
    try:
        check_claims(claims, str(header.get("kid")), now, join=not claims.get("grants", {}).get("admin"))
        problem = None
    except SfuError as exc:
        problem = exc.message
    body = {"header": header, "claims": claims, "expired": expired, "signature": signature,
            "problem": problem}
    text = "\n".join([
        "header: " + orjson.dumps(header).decode(),
        "claims: " + orjson.dumps(claims, option=orjson.OPT_INDENT_2).decode(),
        f"expired: {'yes' if expired else 'no'}",
        f"signature: {signature}",
        f"problem: {problem or 'none'}",
    ])
    _emit(args, body, text)
    return 1 if signature == "invalid" else 0


# argument parsers


def parse_grants(items: Sequence[str]) -> dict[str, Any]:
    """`name=value` pairs into a grants object: booleans, or for publish a comma-separated source list."""
    grants: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        value = value.strip().lower()
        if not sep:
            raise UsageError(f"--grant {item!r} must be NAME=VALUE, like publish=false")
        if value in _TRUE | _FALSE:
            grants[name.strip()] = value in _TRUE
        elif name.strip() == "publish":
            grants["publish"] = [s.strip() for s in value.split(",") if s.strip()]
        else:
            raise UsageError(f"--grant {item!r}: value must be true or false (publish: {', '.join(SOURCES)})")
    Grants.from_wire(grants)
    return grants


def _duration(text: str) -> float:
    match = _DURATION_RE.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 90s, 30m, 1h)")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not 0 < seconds <= MAX_LIFETIME_S:
        raise argparse.ArgumentTypeError(f"duration {text!r} must be positive and at most 24h")
    return seconds


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise argparse.ArgumentTypeError("not valid JSON") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value
