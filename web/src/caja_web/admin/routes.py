"""Admin and supervisor pages: registers, reports, catalogue, users, backup phones, health dashboard."""

from __future__ import annotations

routers: list = []
