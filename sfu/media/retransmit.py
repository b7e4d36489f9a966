"""A fixed ring of recently received packets per feed, for answering subscribers' NACKs."""

from __future__ import annotations

from sfu.media.rtp import SEQ_MASK


class RetransmitBuffer:
    """Packets by `seq & mask` with their original seq (RFC 4585 NACK needs the original back).

    1024 slots hold about 1 s of video at 12 Mbit/s (1200-byte packets); the receiver picks the size.
    """

    __slots__ = ("_mask", "_packets", "_seqs")

    def __init__(self, size: int = 1024) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError("retransmit buffer size must be a power of two")
        self._mask = size - 1
        self._packets: list[bytes | None] = [None] * size
        self._seqs: list[int] = [-1] * size

    @property
    def size(self) -> int:
        return self._mask + 1

    def store(self, seq: int, data: bytes) -> None:
        i = seq & self._mask
        self._packets[i] = data
        self._seqs[i] = seq

    def get(self, seq: int) -> bytes | None:
        """The packet with exactly this seq, or None if it was never stored or was overwritten."""
        i = seq & SEQ_MASK & self._mask
        if self._seqs[i] != seq:
            return None
        return self._packets[i]

    def has(self, seq: int) -> bool:
        return self._seqs[seq & self._mask] == seq

    def clear(self) -> None:
        for i in range(self._mask + 1):
            self._packets[i] = None
            self._seqs[i] = -1
