"""Adapters: the ports implemented on Redis Streams, PostgreSQL, SQLite and plain memory."""
