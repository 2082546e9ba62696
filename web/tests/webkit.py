"""Helpers shared by the web tests."""

from __future__ import annotations

import re


def text_of(html: str) -> str:
    """Visible text, whitespace collapsed (for assertions on what a user reads)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def cart_version(html: str) -> int:
    """The cart version a POS panel shows (what its cart forms send back)."""
    found = re.search(r'id="cart-version" name="v" value="(\d+)"', html)
    assert found, "no cart version on this panel"
    return int(found.group(1))
