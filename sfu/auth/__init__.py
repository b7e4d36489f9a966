"""Credentials: JWTs signed with a client's key, and web-only keys bound to origins."""
