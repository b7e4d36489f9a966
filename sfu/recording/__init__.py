"""Recording: per-feed files remuxed from RTP without re-encoding (see recorder.py)."""
