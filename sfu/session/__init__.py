"""Sessions and their participants, feeds and data pipelines; no aiohttp in here."""
