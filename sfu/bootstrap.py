"""Working credentials on first start: a `demo` client with a secret key and a web-only key for the demo page.

The web-only key is stored only hashed, so its value is kept in `demo-credentials.json` (mode 0600) in the
data directory: that file is how later starts print the same credentials and how the demo page gets them.

Nodes sharing a store (`--redis`) share one set: the store keeps it too (sealed under master.key), and each
node reads or creates it holding the store's bootstrap lock, so nodes that start together on an empty store
create one demo client and one pair of keys and all print the same. A node whose origins the shared web-only
key does not cover gets a key for every node's origins; the older key stays live for the pages of nodes
that still hold it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from sfu.auth.identity import Grants
from sfu.auth.keys import Origin
from sfu.config import Config
from sfu.store.base import Store

log = logging.getLogger("sfu.bootstrap")

DEMO_CLIENT = "demo"
CREDENTIALS_FILE = "demo-credentials.json"


@dataclass(frozen=True, slots=True)
class DemoCredentials:
    cid: str
    key_id: str
    secret: str
    web_key_id: str
    web_key: str
    origins: tuple[str, ...]
    url: str

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["origins"] = list(self.origins)
        return out


def demo_origins(config: Config) -> tuple[str, ...]:
    """The origins a browser on this machine uses for the demo page, plus the listen address if specific."""
    scheme = "https" if config.tls_cert is not None else "http"  # --tls-cert: the page is served over HTTPS
    origins = [f"{scheme}://127.0.0.1:{config.port}", f"{scheme}://localhost:{config.port}"]
    try:
        address = ipaddress.ip_address(config.host)
    except ValueError:
        address = None
    if address is not None and not address.is_unspecified and not address.is_loopback:
        origins.append(str(Origin(scheme, str(address), config.port)))
    return tuple(origins)


def demo_url(config: Config) -> str:
    host = config.host
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(host)
        host = "127.0.0.1" if address.is_unspecified else f"[{host}]" if address.version == 6 else host
    scheme = "https" if config.tls_cert is not None else "http"
    return f"{scheme}://{host}:{config.port}/"


async def ensure_demo(store: Store, config: Config) -> DemoCredentials:
    """The demo credentials, created on first start and reused after; keys revoked meanwhile are replaced."""
    path = Path(config.data_dir) / CREDENTIALS_FILE
    async with store.bootstrap_lock():
        shared = await store.load_demo()
        saved = shared or _read(path)  # a first shared set may start from a node's own (checked below)
        client = await store.find_client_by_name(DEMO_CLIENT)
        if client is None:
            client = await store.create_client(DEMO_CLIENT)
        key_id, secret = await _ensure_secret_key(store, client.cid, saved)
        origins = demo_origins(config)
        web_key_id, web_key, origins = await _ensure_web_key(store, client.cid, saved, origins,
                                                             shared=shared is not None)
        creds = DemoCredentials(client.cid, key_id, secret, web_key_id, web_key, origins, demo_url(config))
        if shared is not None and _without_url(creds.to_json()) != shared:
            await store.save_demo(_without_url(creds.to_json()))
    if creds.to_json() != _read(path):
        _write(path, creds.to_json())
    return creds


def _without_url(data: dict[str, Any]) -> dict[str, Any]:
    """What the nodes share: everything but the page URL, which is each node's own."""
    return {k: v for k, v in data.items() if k != "url"}


async def _ensure_secret_key(store: Store, cid: str, saved: dict[str, Any]) -> tuple[str, str]:
    """Reuses the saved secret key while it is live (not revoked), else creates one."""
    key_id, secret = saved.get("key_id"), saved.get("secret")
    usable = isinstance(key_id, str) and isinstance(secret, str) and saved.get("cid") == cid
    if usable and await store.key_secret(str(key_id)) == str(secret).encode():
        return str(key_id), str(secret)
    record, new_secret = await store.create_secret_key(cid)
    assert new_secret is not None
    log.info("created demo secret key %s", record.key_id)
    return record.key_id, new_secret


async def _ensure_web_key(
    store: Store, cid: str, saved: dict[str, Any], origins: tuple[str, ...], *, shared: bool
) -> tuple[str, str, tuple[str, ...]]:
    """(key_id, value, origins) of the saved web-only key while it is live and covers `origins`; else of a
    new one. On one node the old key is revoked (its origins are of no use after a port change); a shared
    key is replaced by one for its origins and `origins` both, and stays live for the other nodes' pages."""
    value = saved.get("web_key")
    record = await store.find_web_key(value) if isinstance(value, str) else None
    if record is not None and record.cid == cid and not record.revoked:
        if set(origins) <= set(record.origins):
            return record.key_id, str(value), record.origins if shared else origins
        if shared:
            origins = (*record.origins, *(o for o in origins if o not in record.origins))
        else:
            await store.revoke_key(record.key_id)
    record, value = await store.create_web_key(cid, origins, Grants(record=True))
    log.info("created demo web-only key %s for %s", record.key_id, ", ".join(origins))
    return record.key_id, value, origins


def _read(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict[str, Any]) -> None:
    """Writes through a temporary file created 0600, then renames: never a readable or torn file."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(tmp, path)
