"""Core CLI commands: db, user. (serve/demo come from the web package, getnet from its plugin.)"""

from __future__ import annotations

from .cli import cli  # noqa: F401
