"""`--tls-cert/--tls-key`: `sfu serve` answers HTTPS and WSS with a certificate the test makes and trusts."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import aiohttp
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.deploy.serve import serve
from tests.integration.test_cli import sfu


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A P-256 certificate for 127.0.0.1, valid for an hour."""
    key = ec.generate_private_key(ec.SECP256R1())
    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sfu test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([loopback]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_serve_answers_https_and_wss_with_the_configured_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    args = ("--ice-host", "127.0.0.1", "--tls-cert", str(cert), "--tls-key", str(key))
    async with serve(tmp_path / "data", *args) as served, aiohttp.ClientSession() as http:
        assert served.scheme == "https"
        assert f"https://127.0.0.1:{served.port}/" in served.output[0]  # the demo page and its key's origins
        async with http.get(f"{served.url}/healthz", ssl=trust) as response:
            assert response.status == 200 and await response.json() == {"status": "ok"}
        async with http.ws_connect(served.ws_url, ssl=trust) as ws:
            join = {"type": "join", "id": 1, "token": served.token("room", "alice")}
            await ws.send_str(orjson.dumps(join).decode())
            assert orjson.loads(await ws.receive_str(timeout=10))["type"] == "joined"
        try:
            async with http.get(f"{served.url}/healthz") as response:  # the system store does not trust it
                raise AssertionError(f"an untrusted certificate was accepted: {response.status}")
        except aiohttp.ClientConnectorCertificateError:
            pass


async def test_a_tls_key_without_a_certificate_is_a_config_error(tmp_path: Path) -> None:
    result = await sfu("serve", "--data-dir", tmp_path / "data", "--tls-key", tmp_path / "key.pem")
    assert result.code == 2 and "--tls-cert and --tls-key go together" in result.err


async def test_an_unreadable_certificate_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    result = await sfu(
        "serve", "--port", "0", "--data-dir", tmp_path / "data",
        "--tls-cert", tmp_path / "cert.pem", "--tls-key", tmp_path / "cert.pem",
    )
    assert result.code == 2 and result.err.startswith("sfu: error: cannot load --tls-cert"), result.err
