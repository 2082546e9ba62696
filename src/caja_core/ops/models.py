"""Process heartbeats: every app instance and every ``caja worker`` writes one row here every few seconds.

The rows are how one process learns about the others: ``/health`` and the metrics of any instance show every
worker (a dead ``caja worker`` shows within one scrape), the backup runner's last result, and the commands
that must not run under live instances (``caja db downgrade``, ``caja backup restore``) see who is live.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..clock import utcnow
from ..db.base import Base, JSONType, UTCDateTime


class OpsProcess(Base):
    __tablename__ = "ops_processes"

    #: The process's name: ``CAJA_INSTANCE_ID`` (``host-port`` in the systemd units, ``host-worker``).
    name: Mapped[str] = mapped_column(String(120), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # app / worker
    host: Mapped[str] = mapped_column(String(120), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[str] = mapped_column(String(40), default="")
    #: starting / serving / draining / stopped
    state: Mapped[str] = mapped_column(String(12), default="starting")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_beat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    #: The process's background workers: {name: {status, last_beat_at, last_ok_at, last_error, failures}}.
    workers: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    #: For a process that runs scheduled backups: folder, interval and the last run's result.
    backup: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
