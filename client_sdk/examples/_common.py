"""What every example shares: the command line (server, key, session, uid) and a token minted from it."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from client_sdk.tokens import create_token


def parser(description: str, uid: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", default="http://127.0.0.1:7880", help="server base URL")
    parser.add_argument("--key-id", required=True, help="a secret key's id (k_...)")
    parser.add_argument("--secret", required=True, help="that key's secret (sk_...)")
    parser.add_argument("--session", default="demo", help="session name to join")
    parser.add_argument("--uid", default=uid, help="this participant's uid")
    return parser


def token(args: argparse.Namespace, **claims: Any) -> str:
    """A join token for `args.uid` in `args.session`; examples mint their own, a real bot gets one."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return create_token(args.key_id, args.secret, args.session, args.uid, **claims)
