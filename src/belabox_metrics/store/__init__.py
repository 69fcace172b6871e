"""Durable local storage: SQLite in WAL mode, versioned by migrations."""
