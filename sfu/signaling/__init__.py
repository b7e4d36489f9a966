"""The front end: WebSocket signaling and the REST API, both speaking PROTOCOL.md."""
