"""Republishes every feed it receives: a loopback for testing a client against the server.

Frames are decoded and re-encoded by aiortc (a bot that wants to transform media works on frames).

    python -m client_sdk.examples.echo_bot --url http://127.0.0.1:7880 --key-id k_.. --secret sk_..
"""

from __future__ import annotations

import asyncio

import client_sdk
from client_sdk.examples._common import parser, token


async def echo(session: client_sdk.Session, feed: client_sdk.Feed) -> None:
    remote = await session.subscribe(feed.feed_id)
    local = await session.publish(remote.track, source=feed.source, name=f"echo of {feed.uid}")
    print(f"echoing {feed.feed_id} ({feed.kind}) as {local.feed_id}")


async def main() -> None:
    args = parser(__doc__ or "", uid="echo-bot").parse_args()
    joining = client_sdk.connect(args.url, token=token(args, name="Echo bot"), auto_subscribe=False)
    async with await joining as s:
        mine: set[str] = set()
        for feed in [f for p in s.participants_by_uid.values() for f in p.feeds]:
            mine.add(feed.feed_id)
            await echo(s, feed)
        async for event in s.events():
            match event:
                case client_sdk.FeedPublished(feed=feed) if feed.uid != s.uid and feed.feed_id not in mine:
                    mine.add(feed.feed_id)
                    await echo(s, feed)
                case client_sdk.Closed(reason=reason):
                    print(f"closed: {reason}")


if __name__ == "__main__":
    asyncio.run(main())
