"""The arguments of `sfu recording mix` (sfu/recording/mix.py does the work; imported lazily, it needs
PyAV and numpy, which the other CLI commands do not load)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_mix_parser(recording: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`sfu recording mix ...` under the CLI's `recording` command; returns the `mix` parser."""
    p = recording.add_subparsers(dest="action", required=True).add_parser(
        "mix", help="one file with every feed on its timeline: audio mixed, video in a grid (re-encodes)")
    p.add_argument("recording_id", metavar="RECORDING_ID")
    p.add_argument("--out", type=Path, metavar="FILE", help="output .webm or .mkv (default: mix.webm beside "
                   "the recording's files)")
    p.add_argument("--size", default="1280x720", metavar="WxH", help="video size of the mix")
    p.add_argument("--fps", type=int, default=30, help="frame rate of the mix")
    return p
