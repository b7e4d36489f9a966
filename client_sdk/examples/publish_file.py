"""Publishes a pre-encoded media file into a session, as it is (no decoding, no re-encoding).

python -m client_sdk.examples.publish_file --key-id k_.. --secret sk_.. talk.webm
"""

from __future__ import annotations

import asyncio

import client_sdk
from client_sdk.examples._common import parser, token


async def main() -> None:
    cli = parser(__doc__ or "", uid="file-publisher")
    cli.add_argument("path", help="a media file with VP8/H.264 video and/or Opus audio")
    args = cli.parse_args()
    async with await client_sdk.connect(args.url, token=token(args, name=args.path)) as session:
        publication = await session.publish_file(args.path)
        print(f"publishing {args.path} as {[f.feed_id for f in publication.feeds]}; Ctrl-C to stop")
        async for event in session.events():
            if isinstance(event, client_sdk.Closed):
                print(f"closed: {event.reason}")


if __name__ == "__main__":
    asyncio.run(main())
