"""Server settings: each from a `--flag`, else an `SFU_*` environment variable, else its default."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A setting that cannot be used; the CLI prints it on one line and exits with code 2."""


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 7880
    data_dir: Path = Path("./data")
    log_level: str = "info"
    # aioice gathers every interface except loopback: these addresses are what the server offers.
    ice_hosts: tuple[str, ...] = ()
    session_linger_s: float = 30.0
    join_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    resume_window_s: float = 60.0
    max_frame_bytes: int = 64 * 1024
    frames_per_s: float = 50.0
    frame_burst: int = 100
    message_retention_days: float = 7.0
    web_root: Path | None = None  # demo page and browser SDK; None: the checkout's web/ directory
    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str | None = None  # coturn `use-auth-secret`: time-limited credentials per participant
    turn_ttl_s: float = 86400.0
    # Deployment (docs/deployment.md). Announced addresses: ("0.0.0.0"|"::"|local address, public address).
    public_ips: tuple[tuple[str, str], ...] = ()
    rtc_port_range: tuple[int, int] | None = None  # UDP ports ICE host sockets bind, inclusive
    udp_buffer_bytes: int = 2 * 1024 * 1024  # SO_SNDBUF per ICE socket; capped by net.core.wmem_max
    tls_cert: Path | None = None
    tls_key: Path | None = None
    trusted_proxies: tuple[str, ...] = ()  # networks whose X-Forwarded-For/-Proto are believed
    shutdown_timeout_s: float = 5.0
    workers: int = 0  # media worker processes (sfu/cluster); 0: one per core, 1: a single process
    default_gc: bool = False  # keep CPython's GC thresholds instead of sfu/gc_tuning.py's
    # Admission (docs/scaling.md): None means no limit.
    max_participants: int | None = None  # per session; hidden participants (recorders) are not counted
    max_worker_cpu: float | None = None  # percent: no NEW session on a worker at or above it
    # Many nodes (docs/scaling.md): shared store, node registry and session placement in Redis.
    redis_url: str | None = None
    node_url: str | None = None  # how other nodes and redirected clients reach this one (http(s)://host:port)
    region: str = ""
    redirect: bool = False  # a join for a session on another node: tell the client to go there, not relay
    extra: dict[str, Any] = field(default_factory=dict)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be positive")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be 0-65535")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be positive")
    return value


def _percent(text: str) -> float:
    value = float(text)
    if not 0 < value <= 100:
        raise ValueError("must be a percentage above 0 and at most 100")
    return value


def _log_level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return text.lower()


def _ip(text: str) -> str:
    return str(ipaddress.ip_address(text.strip()))


def _public_ip(text: str) -> tuple[str, str]:
    """`PUBLIC` (announced for every host address of its family) or `LOCAL=PUBLIC` (for that one)."""
    local, sep, public = text.strip().rpartition("=")
    announced = ipaddress.ip_address(public.strip())
    if not sep:
        return ("0.0.0.0" if announced.version == 4 else "::"), str(announced)
    bound = ipaddress.ip_address(local.strip())
    if bound.version != announced.version:
        raise ValueError("both addresses must be of one family")
    return str(bound), str(announced)


def _port_range(text: str) -> tuple[int, int]:
    first, sep, last = text.strip().partition("-")
    low, high = int(first), int(last if sep else first)
    if not 1024 <= low <= high <= 65535:
        raise ValueError("must be LOW-HIGH with 1024 <= LOW <= HIGH <= 65535")
    return low, high


def _network(text: str) -> str:
    return str(ipaddress.ip_network(text.strip(), strict=False))


def _redis_url(text: str) -> str:
    url = text.strip()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return url


def _http_url(text: str) -> str:
    url = text.strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url.split("/")) != 3:
        raise ValueError("must be http(s)://HOST:PORT")
    return url


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise ValueError("must be true or false")
    return value in ("true", "1", "yes", "on")


def _ice_url(text: str) -> str:
    url = text.strip()
    if not url.startswith(("stun:", "turn:", "turns:")):
        raise ValueError("must start with stun:, turn: or turns:")
    return url


# Settings that may be given several times (`--ice-host A --ice-host B`, or `SFU_ICE_HOSTS=A,B`); their
# parser parses one item.
REPEATABLE = {
    "ice_hosts": "--ice-host",
    "stun_urls": "--stun-url",
    "turn_urls": "--turn-url",
    "public_ips": "--public-ip",
    "trusted_proxies": "--trusted-proxy",
}
ALIASES = {"public_ips": ("--nat-1to1",), "redis_url": ("--redis",)}
FLAGS = frozenset({"redirect", "default_gc"})
"""Boolean settings given as a bare `--flag` (env: SFU_<NAME>=true|false)."""

# name -> (parser of one text value, help). The env variable is SFU_<NAME upper>.
SETTINGS: dict[str, tuple[Callable[[str], Any], str]] = {
    "host": (str, "address to listen on for HTTP and WebSocket"),
    "port": (_port, "TCP port for HTTP and WebSocket"),
    "data_dir": (Path, "directory for the SQLite store and recordings (created with mode 0700)"),
    "log_level": (_log_level, "debug, info, warning or error"),
    "ice_hosts": (_ip, "ICE host address to offer (repeatable; env: comma-separated)"),
    "session_linger_s": (_positive_float, "seconds an empty session lives on"),
    "join_timeout_s": (_positive_float, "seconds a socket has to send join"),
    "idle_timeout_s": (_positive_float, "seconds of silence before a socket is closed"),
    "resume_window_s": (_positive_float, "seconds a dropped participant may resume"),
    "max_frame_bytes": (_positive_int, "largest WebSocket frame accepted"),
    "frames_per_s": (_positive_float, "sustained WebSocket frames per second per connection"),
    "frame_burst": (_positive_int, "WebSocket frame burst allowance"),
    "message_retention_days": (_positive_float, "days persisted data messages are kept"),
    "web_root": (Path, "directory holding demo/ and sdk/ (default: web/ of the checkout)"),
    "stun_urls": (_ice_url, "STUN server URL handed to clients (repeatable)"),
    "turn_urls": (_ice_url, "TURN server URL handed to clients (repeatable)"),
    "turn_secret": (str, "coturn static-auth-secret: clients get time-limited TURN credentials"),
    "turn_ttl_s": (_positive_float, "lifetime of TURN credentials in seconds"),
    "public_ips": (_public_ip, "address announced in host candidates instead of the bound one: PUBLIC or "
                   "LOCAL=PUBLIC (1:1 NAT, e.g. a cloud VM's elastic IP; repeatable)"),
    "rtc_port_range": (_port_range, "UDP ports for ICE, LOW-HIGH (e.g. 50000-50100); default: ephemeral"),
    "udp_buffer_bytes": (_positive_int, "send buffer of each ICE UDP socket, bytes (default 2 MiB; Linux "
                         "caps it at net.core.wmem_max)"),
    "tls_cert": (Path, "PEM certificate chain: serve HTTPS/WSS directly (with --tls-key)"),
    "tls_key": (Path, "PEM private key of --tls-cert"),
    "trusted_proxies": (_network, "proxy address or network whose X-Forwarded-For/-Proto are trusted "
                        "(repeatable)"),
    "shutdown_timeout_s": (_positive_float, "seconds SIGTERM waits for sockets and recordings to finish"),
    "workers": (_positive_int, "media worker processes behind one front process (default: one per core; "
                "1: everything in a single process)"),
    "default_gc": (_bool, "keep CPython's garbage-collector settings (default: tuned for many peers, "
                   "docs/scaling.md)"),
    "max_participants": (_positive_int, "most participants in one session, hidden ones (recorders) not "
                         "counted (default: no limit)"),
    "max_worker_cpu": (_percent, "CPU percent of a worker at or above which it takes no new session; "
                       "when every worker is there, new sessions are refused `unavailable` (default: off)"),
    "redis_url": (_redis_url, "Redis URL (redis://host:6379/0): keys, clients and session placement shared "
                  "by every node; without it one node keeps them in SQLite"),
    "node_url": (_http_url, "with --redis: this node's address for other nodes and redirected clients "
                 "(default: the listening address)"),
    "region": (str, "with --redis: this node's region label (new sessions of a draining node go to the "
               "same region first)"),
    "redirect": (_bool, "with --redis: send a client whose session lives on another node there instead "
                 "of relaying its socket"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, (_, help_text) in SETTINGS.items():
        flag = "--" + name.replace("_", "-")
        if name in REPEATABLE:
            flags = (REPEATABLE[name], *ALIASES.get(name, ()))
            parser.add_argument(*flags, dest=name, action="append", metavar="VALUE", help=help_text)
        elif name in FLAGS:
            parser.add_argument(flag, dest=name, action="store_const", const="true", help=help_text)
        else:
            parser.add_argument(flag, *ALIASES.get(name, ()), dest=name, metavar=name.upper(), help=help_text)


def load(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Merge flags over `SFU_*` variables over defaults; raises ConfigError naming the bad setting."""
    env = os.environ if environ is None else environ
    known = {"SFU_" + name.upper() for name in SETTINGS}
    unknown = sorted(k for k in env if k.startswith("SFU_") and k not in known)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]} (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for name, (parse, _) in SETTINGS.items():
        raw: Any = getattr(args, name, None) if args is not None else None
        source = "--" + name.replace("_", "-")
        if raw is None and "SFU_" + name.upper() in env:
            raw, source = env["SFU_" + name.upper()], "SFU_" + name.upper()
        if raw is None:
            continue
        try:
            if name in REPEATABLE:
                items = _flatten(raw if isinstance(raw, list) else [raw])
                values[name] = tuple(parse(item) for item in items)
            else:
                values[name] = parse(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid {source} {raw!r}: {exc}") from None
    if "redis_url" not in values and any(k in values for k in ("node_url", "region", "redirect")):
        raise ConfigError("--node-url, --region and --redirect need --redis-url")
    if "redis_url" in values and importlib.util.find_spec("redis") is None:
        raise ConfigError("--redis needs the redis package: pip install 'pysfu[redis]'")
    if ("tls_cert" in values) != ("tls_key" in values):
        raise ConfigError("--tls-cert and --tls-key go together")
    return Config(**values)


def _flatten(items: Sequence[str]) -> list[str]:
    return [part for item in items for part in item.split(",") if part.strip()]


def setting_names() -> list[str]:
    return [f.name for f in fields(Config) if f.name != "extra"]
