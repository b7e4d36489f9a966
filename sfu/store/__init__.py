"""Persistence behind one small interface (`Store`); SQLite in the data directory is the embedded default."""
