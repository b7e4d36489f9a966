"""Answers every message on a pipeline: the shape of a bot or an AI agent in a session.

python -m client_sdk.examples.chat_bot --url http://127.0.0.1:7880 --key-id k_.. --secret sk_..
"""

from __future__ import annotations

import asyncio
from typing import Any

import client_sdk
from client_sdk.examples._common import parser, token


def reply_to(data: Any) -> Any:
    """Replace with a call to your model; here: echo the text, upper-cased."""
    text = data.get("text") if isinstance(data, dict) else data
    return {"text": f"you said: {str(text).upper()}"}


async def main() -> None:
    cli = parser(__doc__ or "", uid="chat-bot")
    cli.add_argument("--pipeline", default="chat")
    args = cli.parse_args()
    joining = client_sdk.connect(args.url, token=token(args, name="Chat bot"), auto_subscribe=False)
    async with await joining as s:
        print(f"chat bot in {s.sid} as {s.uid}, answering on pipeline {args.pipeline!r}")
        async for event in s.events():
            match event:
                case client_sdk.Message(from_uid=sender, pipeline=pipeline, data=data) if (
                    pipeline == args.pipeline and sender != s.uid
                ):
                    await s.send(reply_to(data), to=[sender], pipeline=pipeline)
                case client_sdk.Closed(reason=reason):
                    print(f"closed: {reason}")


if __name__ == "__main__":
    asyncio.run(main())
