from __future__ import annotations

from datetime import datetime

import msgspec


class BackupPhoneInput(msgspec.Struct, kw_only=True):
    """What an admin enters for a backup phone. ``register_id`` None = shared by every register."""

    name: str
    identifier: str
    register_id: int | None = None
    available: bool = True


class BackupPhoneOut(msgspec.Struct, kw_only=True):
    id: int
    venue_id: int
    name: str
    identifier: str
    register_id: int | None
    register_name: str | None
    available: bool
    last_checked_at: datetime | None

    @property
    def label(self) -> str:
        """What the POS shows: "Celular 1 (CEL-01)"."""
        return f"{self.name} ({self.identifier})"
