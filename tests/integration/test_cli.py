"""Every `sfu` command end to end, as a user runs it: `python -m sfu ...` in a subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from shlex import split
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sfu.auth.authenticator import Authenticator
from sfu.store.sqlite import SqliteStore

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"


@dataclass(frozen=True, slots=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        body = orjson.loads(self.out)
        assert isinstance(body, dict)
        return body


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFU_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


async def sfu(*args: str | Path, env: dict[str, str] | None = None, cwd: Path = REPO) -> Result:
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "sfu",
        *map(str, args),
        cwd=cwd,
        env=env or clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def entries(path: Path) -> list[str]:
    return sorted(os.listdir(path))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


async def new_client(data_dir: Path, name: str = "acme") -> str:
    result = await sfu("client", "create", name, "--data-dir", data_dir, "--json")
    assert result.code == 0, result.err
    cid = result.json()["cid"]
    assert isinstance(cid, str)
    return cid


async def test_client_create_and_list_print_one_json_object(data_dir: Path) -> None:
    created = await sfu("client", "create", "acme", "--data-dir", data_dir, "--json")
    assert created.code == 0 and created.err == ""
    body = created.json()
    assert set(body) == {"cid", "name"} and body["name"] == "acme" and body["cid"].startswith("c_")
    listed = await sfu("client", "list", "--data-dir", data_dir, "--json")
    assert [c["cid"] for c in listed.json()["clients"]] == [body["cid"]]
    text = await sfu("client", "list", "--data-dir", data_dir)
    assert body["cid"] in text.out and "acme" in text.out


async def test_a_duplicate_client_name_fails_with_one_line(data_dir: Path) -> None:
    await new_client(data_dir)
    again = await sfu("client", "create", "acme", "--data-dir", data_dir)
    assert again.code == 1 and again.out == ""
    assert (
        again.err.count("\n") == 1 and again.err.startswith("sfu: error: ") and "already exists" in again.err
    )


async def test_sfu_data_dir_in_the_environment_selects_the_store(data_dir: Path) -> None:
    env = clean_env(SFU_DATA_DIR=str(data_dir))
    created = await sfu("client", "create", "envco", "--json", env=env)
    assert created.code == 0, created.err
    assert (data_dir / "sfu.db").exists()
    listed = await sfu("client", "list", "--json", env=env)
    assert listed.json()["clients"][0]["name"] == "envco"


async def test_key_create_prints_the_secret_once_and_it_verifies(data_dir: Path) -> None:
    cid = await new_client(data_dir)
    created = await sfu("key", "create", "--client", cid, "--data-dir", data_dir, "--json")
    body = created.json()
    assert body["type"] == "secret" and body["origins"] == [] and body["secret"].startswith("sk_")
    token = jwt.encode(
        {"iss": body["key_id"], "sub": "u", "sid": "s", "exp": int(time.time()) + 60},
        body["secret"],
        "HS256",
        headers={"kid": body["key_id"]},
    )
    store = SqliteStore(data_dir)
    await store.open()
    try:
        assert (await Authenticator(store).verify_token(token)).cid == cid
    finally:
        await store.close()
    listed = await sfu("key", "list", "--client", cid, "--data-dir", data_dir, "--json")
    assert [k["key_id"] for k in listed.json()["keys"]] == [body["key_id"]]
    assert body["secret"] not in listed.out


async def test_key_create_text_output_shows_the_secret(data_dir: Path) -> None:
    cid = await new_client(data_dir)
    created = await sfu("key", "create", "--client", cid, "--data-dir", data_dir)
    assert created.code == 0 and re.search(r"secret: sk_\S+", created.out)


async def test_a_web_only_key_is_created_with_its_origins_and_grants(data_dir: Path) -> None:
    await new_client(data_dir, "webco")
    created = await sfu(
        *split("key create --client webco --web-only --origin https://*.example.com --record"),
        *split("--origin http://localhost:8000 --max-participants 6 --json --data-dir"),
        data_dir,
    )
    body = created.json()
    assert body["type"] == "web_only" and body["secret"].startswith("wk_")
    assert body["origins"] == ["https://*.example.com", "http://localhost:8000"]
    assert body["grants"]["record"] is True and body["max_participants"] == 6


async def test_key_create_with_a_junk_origin_exits_2_with_one_line(data_dir: Path) -> None:
    cid = await new_client(data_dir)
    result = await sfu(
        "key", "create", "--client", cid, "--web-only", "--origin", "https://*", "--data-dir", data_dir
    )
    assert result.code == 2 and result.err.count("\n") == 1 and result.err.startswith("sfu: error: origin")


async def test_an_es256_key_registers_a_public_key_file(data_dir: Path, tmp_path: Path) -> None:
    cid = await new_client(data_dir)
    private = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "pub.pem"
    pem.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    created = await sfu(
        *split(f"key create --client {cid} --algorithm ES256 --json"),
        *("--public-key", pem, "--data-dir", data_dir),
    )
    body = created.json()
    assert body["algorithm"] == "ES256" and body["secret"] is None


async def test_key_revoke_marks_the_key_and_an_unknown_key_fails(data_dir: Path) -> None:
    cid = await new_client(data_dir)
    key_id = (await sfu("key", "create", "--client", cid, "--data-dir", data_dir, "--json")).json()["key_id"]
    revoked = await sfu("key", "revoke", key_id, "--data-dir", data_dir, "--json")
    assert revoked.json() == {"key_id": key_id, "revoked": True}
    listed = await sfu("key", "list", "--client", cid, "--data-dir", data_dir, "--json")
    assert listed.json()["keys"][0]["revoked"] is True
    missing = await sfu("key", "revoke", "k_missing", "--data-dir", data_dir)
    assert missing.code == 1 and missing.err == "sfu: error: key 'k_missing' not found\n"


async def test_token_create_works_offline_and_token_inspect_verifies_it(tmp_path: Path) -> None:
    secret = "sk_" + "x" * 43
    created = await sfu(
        *split(f"token create --key k_1 --secret {secret} --session room --uid bob --ttl 2h"),
        *("--grant", "publish=false", "--description", '{"a":1}'),
        cwd=tmp_path,
    )
    assert created.code == 0 and entries(tmp_path) == []
    token = created.out.strip()
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 7200 and claims["grants"] == {"publish": False}
    inspected = await sfu("token", "inspect", token, "--secret", secret, "--json")
    body = inspected.json()
    assert inspected.code == 0 and body["signature"] == "valid" and body["expired"] is False
    assert body["claims"]["sub"] == "bob" and body["header"]["kid"] == "k_1" and body["problem"] is None
    wrong = await sfu("token", "inspect", token, "--secret", "sk_" + "y" * 43)
    assert wrong.code == 1 and "signature: invalid" in wrong.out


async def test_token_inspect_says_when_a_token_has_expired() -> None:
    old = jwt.encode(
        {"iss": "k_1", "sub": "u", "sid": "s", "iat": 1000, "exp": 1060},
        "s" * 40,
        "HS256",
        headers={"kid": "k_1"},
    )
    inspected = await sfu("token", "inspect", old)
    assert (
        inspected.code == 0 and "expired: yes" in inspected.out and "signature: not checked" in inspected.out
    )


async def test_token_create_json_and_admin_tokens() -> None:
    created = await sfu("token", "create", "--key", "k_1", "--secret", "s" * 40, "--admin", "--json")
    body = created.json()
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["grants"] == {"admin": True} and "sub" not in claims and body["expires_at"] == claims["exp"]


@pytest.mark.parametrize(
    "command",
    [
        "token create --key k --secret s --uid u",
        "token create --key k --secret s --session s --uid u --ttl 25h",
        "token create --key k --secret s --session s --uid u --grant fly=true",
        "token create --key k --secret s --session s --uid u --grant publish=maybe",
        "token create --key k --secret s --session s --uid u --description [1]",
        "token inspect not-a-token",
        "key create",
        "key create --client c_1 --origin https://example.com",
        "serve --port 70000",
        "serve --log-level loud",
        "nonsense",
        "",
    ],
)
async def test_usage_and_config_errors_exit_2_with_one_line(command: str, tmp_path: Path) -> None:
    result = await sfu(*split(command), cwd=tmp_path)
    assert result.code == 2, result
    assert result.err.count("\n") == 1 and result.err.startswith("sfu: error: ") and result.out == ""


async def test_an_unknown_sfu_variable_is_a_config_error(tmp_path: Path) -> None:
    result = await sfu("serve", "--data-dir", tmp_path, env=clean_env(SFU_PROT="1"))
    assert result.code == 2 and result.err.startswith("sfu: error: unknown setting SFU_PROT")
    assert result.err.count("\n") == 1


async def test_serve_prints_the_demo_credentials_answers_healthz_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *(PYTHON, "-m", "sfu", "serve", "--port", "0", "--data-dir", str(tmp_path / "data")),
        *("--ice-host", "127.0.0.1", "--log-level", "warning"),
        cwd=REPO,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        banner = ""
        while "demo page" not in banner:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not line:
                raise AssertionError(f"serve exited early: {(await proc.stderr.read()).decode()}")
            banner += line.decode()
        port = int(re.search(r"listening on http://127\.0\.0\.1:(\d+)", banner).group(1))  # type: ignore[union-attr]
        for pattern in (
            r"cid=c_\w+",
            r"key_id=k_\w+ secret=sk_\S+",
            r"key=wk_\S+",
            rf"http://127\.0\.0\.1:{port}/",
        ):
            assert re.search(pattern, banner), (pattern, banner)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200 and await response.json() == {"status": "ok"}
        saved = orjson.loads((tmp_path / "data" / "demo-credentials.json").read_bytes())
        assert saved["secret"] in banner and saved["web_key"] in banner
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_on_a_busy_port_exits_2_with_one_line(tmp_path: Path) -> None:
    busy = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    try:
        port = busy.sockets[0].getsockname()[1]
        result = await sfu(
            "serve", "--port", str(port), "--data-dir", tmp_path / "data", "--log-level", "error"
        )
    finally:
        busy.close()
        await busy.wait_closed()
    assert result.code == 2 and result.out == ""
    assert result.err.strip().splitlines()[-1].startswith("sfu: error: cannot listen")
