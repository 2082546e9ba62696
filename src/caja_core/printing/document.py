"""A printable document (receipt, comanda, report, test page) as plain data, and its ESC/POS rendering.

The same ``Document`` is rendered to ESC/POS bytes here and to a printable HTML page by the web app, so a
ticket reads the same on a thermal printer and in the browser.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

import msgspec
from escpos.printer import Dummy

Style = Literal["", "bold", "big", "small"]

#: Characters per line in font A (12 dots wide) for each paper width.
COLUMNS = {58: 32, 80: 48}

_CODECS = {"CP858": "cp858", "CP850": "cp850", "CP437": "cp437", "CP1252": "cp1252"}


class Line(msgspec.Struct, frozen=True, kw_only=True):
    """One line: ``text`` on the left (or centred), ``right`` flush right (amounts). ``rule`` draws a line."""

    text: str = ""
    right: str = ""
    align: Literal["left", "center"] = "left"
    style: Style = ""
    rule: bool = False


class Document(msgspec.Struct, kw_only=True):
    title: str  # what it is, for people and logs ("Ticket venta #12")
    lines: list[Line] = msgspec.field(default_factory=list)
    barcode: str | None = None  # CODE39 (digits and capitals)
    qr: str | None = None  # a URL
    qr_caption: str = ""
    kick_drawer: bool = False
    cut: bool = True
    paper_width: int = 80

    def add(self, text: str = "", right: str = "", **kw) -> Document:
        self.lines.append(Line(text=text, right=right, **kw))
        return self

    def rule(self) -> Document:
        self.lines.append(Line(rule=True))
        return self


def printable(text: str, codepage: str) -> str:
    """``text`` with what the code page cannot print replaced: accents dropped (Á → A on CP437), control
    characters removed, anything else as "?"."""
    codec = _CODECS.get(codepage, "cp858")
    out = []
    for ch in text:
        if ch in "\n":
            out.append(" ")
            continue
        if ord(ch) < 32 or 127 <= ord(ch) < 160:
            continue
        try:
            ch.encode(codec)
            out.append(ch)
        except UnicodeEncodeError:
            base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
            out.append(base or "?")
    return "".join(out)


def wrap(text: str, width: int) -> list[str]:
    """``text`` in rows of at most ``width`` characters, broken between words (a word wider than the paper
    is broken where it must); its indentation starts every row."""
    indent = text[: len(text) - len(text.lstrip(" "))][: width // 2]
    if indent:
        return [indent + row for row in wrap(text.lstrip(" "), width - len(indent))]
    rows: list[str] = []
    row = ""
    for word in text.split():
        while len(word) > width:
            if row:
                rows.append(row)
                row = ""
            rows.append(word[:width])
            word = word[width:]
        if not word:
            continue
        if row and len(row) + 1 + len(word) > width:
            rows.append(row)
            row = word
        else:
            row = f"{row} {word}" if row else word
    if row or not rows:
        rows.append(row)
    return rows


def fit(left: str, right: str, width: int) -> list[str]:
    """``left`` and ``right`` on rows of ``width`` characters: ``right`` flush right on the last row of
    ``left`` when both fit, else on its own row(s) below; words are never split to make room."""
    rows = wrap(left, width) if left.strip() or not right else []
    if not right:
        return rows
    if rows and len(rows[-1]) + 1 + len(right) <= width:
        rows[-1] = rows[-1].ljust(width - len(right) - 1) + " " + right
        return rows
    return rows + [r.rjust(width) for r in wrap(right, width)]


def render_escpos(doc: Document, *, codepage: str = "CP858", cut: bool = True, profile: str = "default") -> bytes:
    """The ESC/POS bytes of ``doc``: initialise, code page, lines, barcode, QR, drawer kick, cut."""
    p = Dummy(profile=profile)
    p.hw("INIT")
    p.charcode(codepage)
    if doc.kick_drawer:
        p.cashdraw(2)
    width = COLUMNS.get(doc.paper_width, 48)
    for line in doc.lines:
        if line.rule:
            p.set(align="left", bold=False, normal_textsize=True)
            p.textln("-" * width)
            continue
        big = line.style == "big"
        p.set(
            align=line.align,
            bold=line.style in ("bold", "big"),
            double_height=big,
            double_width=big,
            normal_textsize=not big,
        )
        cols = width // 2 if big else width
        for row in fit(printable(line.text, codepage), printable(line.right, codepage), cols):
            p.textln(row)
    p.set(align="center", bold=False, normal_textsize=True)
    if doc.barcode:
        p.ln()
        p._hw_barcode(doc.barcode, "CODE39", height=60, width=2, function_type="B", align_ct=True)
    if doc.qr:
        p.ln()
        p.qr(doc.qr, native=True, size=5)
        if doc.qr_caption:
            p.textln(printable(doc.qr_caption, codepage))
    p.set(align="left")
    if cut and doc.cut:
        p.cut()
    else:
        p.ln(3)
    return p.output


def render_kick() -> bytes:
    """Only the drawer kick (pin 2, the usual connector)."""
    p = Dummy()
    p.cashdraw(2)
    return p.output
