"""The store's one error."""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot be used (corrupt, full, unwritable, of an unknown or newer schema, a migration failed). The
    station must stop offering charging."""
