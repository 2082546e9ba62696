"""Helpers shared by the web tests."""

from __future__ import annotations

import re


def text_of(html: str) -> str:
    """Visible text, whitespace collapsed (for assertions on what a user reads)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
