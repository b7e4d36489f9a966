"""A selective forwarding media server (SFU) in Python: forwards RTP between aiortc peers without decoding."""

__version__ = "0.1.0"
