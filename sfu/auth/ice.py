"""The `ice_servers` a participant is handed in `joined`: static STUN/TURN URLs and, with a TURN shared
secret, coturn REST-mode credentials (username `expiry:uid`, credential base64 HMAC-SHA1 of the username;
draft-uberti-behave-turn-rest-00), which expire by themselves so no TURN password is ever long-lived."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from sfu.config import Config


def ice_servers_for(config: Config, uid: str, now_s: float) -> list[dict[str, Any]]:
    servers: list[dict[str, Any]] = []
    if config.stun_urls:
        servers.append({"urls": list(config.stun_urls)})
    if config.turn_urls:
        turn: dict[str, Any] = {"urls": list(config.turn_urls)}
        if config.turn_secret:
            username = f"{int(now_s + config.turn_ttl_s)}:{uid}"
            digest = hmac.new(config.turn_secret.encode(), username.encode(), hashlib.sha1).digest()
            turn["username"] = username
            turn["credential"] = base64.b64encode(digest).decode()
        servers.append(turn)
    return servers
