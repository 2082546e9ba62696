"""Charts of a jornada's figures as SVG drawn on the server: no script, no chart library, nothing fetched.

Each chart is accessible: the SVG is an image with a title and a description (``role="img"``,
``aria-labelledby``), every bar and mark carries its own ``<title>`` (label and value), and the same numbers go
with it as a table (``Chart.rows``) that the page shows behind a "Ver datos" toggle. The drawing scales to
the width of its container (``viewBox``), from a phone to a printed page.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

import msgspec

from ..clock import to_local
from ..money import format_clp
from .models import QUARTER_S
from .service import FallbackMark, JornadaFigures, NightCurve, TimeSlot

WIDTH = 480  # text of 14 units stays readable when a phone shows the chart 320 px wide
BAR_HEIGHT = 30
COLUMNS_HEIGHT = 200
LEFT = 112  # room for the labels of a row chart
MARGIN = 8


class Bar(msgspec.Struct, kw_only=True):
    label: str
    value: float
    text: str  # the value as people read it ("$12.500", "92 %")


class Mark(msgspec.Struct, kw_only=True):
    """Something that happened at a point of a time line (a fallback): ``position`` in bars from the first."""

    position: float
    text: str


class Chart(msgspec.Struct, kw_only=True):
    id: str
    title: str
    description: str
    svg: str
    headers: list[str]
    rows: list[list[str]]

    @property
    def empty(self) -> bool:
        return not self.rows


def _open(chart_id: str, title: str, description: str, height: int) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{chart_id}" viewBox="0 0 {WIDTH} {height}" '
        f'role="img" aria-labelledby="{chart_id}-title {chart_id}-desc" preserveAspectRatio="xMidYMid meet">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>',
    ]


def rows_chart(chart_id: str, title: str, description: str, bars: list[Bar], *, unit: str) -> Chart:
    """Horizontal bars, one per line (registers, providers, categories, terminals)."""
    height = MARGIN * 2 + BAR_HEIGHT * max(1, len(bars))
    top = max((b.value for b in bars), default=0) or 1
    room = WIDTH - LEFT - 12 - 8 * max((len(b.text) for b in bars), default=0)  # the value fits after the bar
    parts = _open(chart_id, title, description, height)
    if not bars:
        parts.append(
            f'<text class="empty" x="{WIDTH // 2}" y="{height // 2 + 4}" text-anchor="middle">Sin datos</text>'
        )
    for n, b in enumerate(bars):
        y = MARGIN + n * BAR_HEIGHT
        w = max(0.0, b.value) / top * room
        parts.append(
            f'<text class="label" x="{LEFT - 6}" y="{y + 20}" text-anchor="end">{escape(_short(b.label, 13))}</text>'
            f'<rect class="bar" x="{LEFT}" y="{y + 4}" width="{w:.1f}" height="{BAR_HEIGHT - 8}">'
            f"<title>{escape(b.label)}: {escape(b.text)}</title></rect>"
            f'<text class="value" x="{LEFT + w + 6:.1f}" y="{y + 20}">{escape(b.text)}</text>'
        )
    parts.append("</svg>")
    return Chart(
        id=chart_id,
        title=title,
        description=description,
        svg="".join(parts),
        headers=["", unit],
        rows=[[b.label, b.text] for b in bars],
    )


def columns_chart(
    chart_id: str, title: str, description: str, bars: list[Bar], *, unit: str, marks: list[Mark] | None = None
) -> Chart:
    """Vertical bars in time order (the night by quarter hour or by hour), with marks on the time line; a label
    under every bar that starts an hour (or every bar, when there are few)."""
    marks = marks or []
    plot_top, plot_bottom = 20, COLUMNS_HEIGHT - 26
    plot_h = plot_bottom - plot_top
    n = max(1, len(bars))
    step = (WIDTH - 2 * MARGIN) / n
    top = max((b.value for b in bars), default=0) or 1
    parts = _open(chart_id, title, description, COLUMNS_HEIGHT)
    parts.append(
        f'<line class="axis" x1="{MARGIN}" y1="{plot_bottom}" x2="{WIDTH - MARGIN}" y2="{plot_bottom}"/>'
        f'<text class="value" x="{MARGIN}" y="14">{escape(_max_text(bars))}</text>'
    )
    if not bars:
        parts.append(
            f'<text class="empty" x="{WIDTH // 2}" y="{COLUMNS_HEIGHT // 2}" text-anchor="middle">Sin ventas aún</text>'
        )
    few = len(bars) <= 8
    for i, b in enumerate(bars):
        h = max(0.0, b.value) / top * plot_h
        x = MARGIN + i * step
        parts.append(
            f'<rect class="bar" x="{x + step * 0.1:.1f}" y="{plot_bottom - h:.1f}" width="{step * 0.8:.1f}" '
            f'height="{h:.1f}"><title>{escape(b.label)}: {escape(b.text)}</title></rect>'
        )
        if few or b.label[2:5] == ":00":
            parts.append(
                f'<text class="tick" x="{x + step / 2:.1f}" y="{COLUMNS_HEIGHT - 8}" '
                f'text-anchor="middle">{escape(b.label[:5])}</text>'
            )
    for m in marks:
        x = MARGIN + m.position * step
        parts.append(
            f'<g class="mark"><line x1="{x:.1f}" y1="{plot_top}" x2="{x:.1f}" y2="{plot_bottom}"/>'
            f'<circle cx="{x:.1f}" cy="{plot_top}" r="5"/><title>{escape(m.text)}</title></g>'
        )
    parts.append("</svg>")
    rows = [[b.label, b.text] for b in bars] + [["", m.text] for m in marks]
    return Chart(
        id=chart_id,
        title=title,
        description=description,
        svg="".join(parts),
        headers=["Hora", unit],
        rows=rows,
    )


def seconds(value: float | None) -> str:
    """``4.25`` → ``"4,2 s"`` (a decimal comma, as people write it here)."""
    return "—" if value is None else f"{value:.1f} s".replace(".", ",")


def _short(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


def _max_text(bars: list[Bar]) -> str:
    if not bars:
        return ""
    return "máx. " + max(bars, key=lambda b: b.value).text


def _money(slots: list[TimeSlot]) -> list[Bar]:
    return [Bar(label=x.label, value=x.amount, text=format_clp(x.amount)) for x in slots]


def _position(at: datetime, slots: list[TimeSlot]) -> float:
    return (at - slots[0].start).total_seconds() / QUARTER_S


def night_chart(f: JornadaFigures, chart_id: str = "ventas-15min") -> Chart:
    """Sales per quarter hour across the night, with the fallback events on the time line: one mark per quarter
    hour that had any (a bad night has hundreds), placed at the first and naming them all up to five."""
    marks = []
    if f.quarters:
        first = f.quarters[0].start
        end = f.quarters[-1].start.timestamp() + QUARTER_S
        by_quarter: dict[int, list[FallbackMark]] = {}
        for e in f.fallbacks:
            if first <= e.at and e.at.timestamp() < end:
                by_quarter.setdefault(int(_position(e.at, f.quarters)), []).append(e)
        for events in by_quarter.values():
            shown = "; ".join(
                f"{to_local(e.at, f.timezone):%H:%M} {e.register_code}: {e.from_provider} → {e.to_provider} ({e.reason})"
                for e in events[:5]
            )
            more = f" y {len(events) - 5} más" if len(events) > 5 else ""
            prefix = f"{len(events)} cambios al respaldo: " if len(events) > 1 else ""
            marks.append(Mark(position=_position(events[0].at, f.quarters), text=prefix + shown + more))
    count = sum(1 for e in f.fallbacks if f.quarters and f.quarters[0].start <= e.at)
    return columns_chart(
        chart_id,
        "Ventas cada 15 minutos",
        f"Monto vendido en cada cuarto de hora de la jornada, hora de {f.timezone}; "
        f"los círculos son cambios al proveedor de respaldo ({count}).",
        _money(f.quarters),
        unit="Monto",
        marks=marks,
    )


def hours_chart(f: JornadaFigures, chart_id: str = "ventas-hora") -> Chart:
    return columns_chart(
        chart_id, "Ventas por hora", f"Monto vendido en cada hora, hora de {f.timezone}.", _money(f.hours), unit="Monto"
    )


def register_chart(f: JornadaFigures, chart_id: str = "ventas-caja") -> Chart:
    return rows_chart(
        chart_id,
        "Ventas por caja",
        "Monto vendido por cada caja en la jornada.",
        [Bar(label=x.label, value=x.amount, text=format_clp(x.amount)) for x in f.by_register],
        unit="Monto",
    )


def provider_chart(f: JornadaFigures, chart_id: str = "ventas-proveedor") -> Chart:
    return rows_chart(
        chart_id,
        "Ventas por medio de pago",
        "Monto cobrado en efectivo y por cada proveedor de pago con tarjeta.",
        [Bar(label=x.label, value=x.amount, text=format_clp(x.amount)) for x in f.by_provider],
        unit="Monto",
    )


def category_chart(f: JornadaFigures, chart_id: str = "ventas-categoria") -> Chart:
    return rows_chart(
        chart_id,
        "Ventas por categoría",
        "Monto vendido por categoría de producto.",
        [Bar(label=x.label, value=x.amount, text=format_clp(x.amount)) for x in f.categories],
        unit="Monto",
    )


def approval_chart(f: JornadaFigures, chart_id: str = "aprobacion-terminal") -> Chart:
    terminals = [t for t in f.terminals if t.approval_rate is not None]
    return rows_chart(
        chart_id,
        "Aprobación por terminal",
        "Porcentaje de cobros con tarjeta aprobados entre los aprobados y rechazados de cada terminal"
        + (f" en los últimos {_minutes(f)} minutos." if f.terminal_window else " en la jornada."),
        [
            Bar(
                label=t.register_code,
                value=round((t.approval_rate or 0) * 100),
                text=f"{round((t.approval_rate or 0) * 100)} % de {t.approved + t.not_approved}",
            )
            for t in terminals
        ],
        unit="Aprobados",
    )


def approval_time_chart(f: JornadaFigures, chart_id: str = "tiempo-aprobacion") -> Chart:
    terminals = [t for t in f.terminals if t.average_approval_s is not None]
    return rows_chart(
        chart_id,
        "Tiempo hasta la aprobación",
        "Segundos en promedio desde el envío al terminal hasta la aprobación"
        + (f", en los últimos {_minutes(f)} minutos." if f.terminal_window else ", en la jornada."),
        [
            Bar(
                label=t.register_code,
                value=t.average_approval_s or 0,
                text=f"{seconds(t.average_approval_s)} (máx. {seconds(t.slowest_approval_s)})",
            )
            for t in terminals
        ],
        unit="Segundos",
    )


def lines_chart(chart_id: str, title: str, description: str, curves: list[NightCurve]) -> Chart:
    """Nights added up hour by hour, one line per night with a point at the end of each hour (the first line,
    tonight, drawn strongest); the hours of the night along the bottom, a legend on top.

    The hours along the bottom are every hour from the earliest to the latest of any night, in the order a clock
    shows them: an hour a night's clock went back over is there twice (``23:00`` then ``23:00 (2ª)``), and a
    night that had it once ends it where the second one ends (at ``00:00``, like its clock); an hour a night's
    clock skipped is there only when another night had it, and that night's line goes straight over it."""
    axis = _night_axis(curves)
    index = {slot: n for n, slot in enumerate(axis)}
    ends = [_night_hour_label(axis[n + 1]) if n + 1 < len(axis) else _hour(h + 1) for n, (h, _) in enumerate(axis)]
    top = max((p.total for c in curves for p in c.points), default=0) or 1
    plot_top, plot_bottom = 20 + 16 * ((len(curves) + 2) // 3), COLUMNS_HEIGHT + 40 - 26
    height = COLUMNS_HEIGHT + 40
    step = (WIDTH - 2 * MARGIN) / max(1, len(axis))

    def x_of(n: int) -> float:
        return MARGIN + (n + 1) * step  # the end of the n-th hour along the bottom

    def y_of(amount: int) -> float:
        return plot_bottom - max(0, amount) / top * (plot_bottom - plot_top)

    parts = _open(chart_id, title, description, height)
    parts.append(
        f'<line class="axis" x1="{MARGIN}" y1="{plot_bottom}" x2="{WIDTH - MARGIN}" y2="{plot_bottom}"/>'
        f'<text class="value" x="{WIDTH - MARGIN}" y="{plot_top - 4}" text-anchor="end">'
        f"{escape('máx. ' + format_clp(top) if axis else '')}</text>"
    )
    if not axis:
        parts.append(
            f'<text class="empty" x="{WIDTH // 2}" y="{height // 2}" text-anchor="middle">Sin ventas aún</text>'
        )
    for n, c in enumerate(curves):
        lx, ly = MARGIN + (n % 3) * (WIDTH - 2 * MARGIN) / 3, 14 + 16 * (n // 3)
        parts.append(
            f'<g class="legend night-{n}"><line x1="{lx:.1f}" y1="{ly - 4}" x2="{lx + 14:.1f}" y2="{ly - 4}"/>'
            f'<text x="{lx + 18:.1f}" y="{ly}">{escape(_short(c.label, 18))}</text></g>'
        )
    at = [_places(c, index) for c in curves]
    for n, c in enumerate(curves):
        if not c.points:
            continue
        start = f"{x_of(index[c.points[0].slot] - 1):.1f},{plot_bottom}"
        path = " ".join([start] + [f"{x_of(i):.1f},{y_of(p.total):.1f}" for i, p in zip(at[n], c.points, strict=True)])
        parts.append(f'<g class="night night-{n}"><polyline points="{path}"/>')
        for i, p in zip(at[n], c.points, strict=True):
            parts.append(
                f'<circle class="point" cx="{x_of(i):.1f}" cy="{y_of(p.total):.1f}" r="{4 if n == 0 else 3}">'
                f"<title>{escape(c.label)}, hasta las {ends[i]}: {escape(format_clp(p.total))}</title></circle>"
            )
        parts.append("</g>")
    for n, (h, _) in enumerate(axis):
        end_hour = axis[n + 1][0] if n + 1 < len(axis) else h + 1
        if len(axis) <= 12 or end_hour % 2 == 0:
            parts.append(
                f'<text class="tick" x="{x_of(n):.1f}" y="{height - 8}" text-anchor="middle">'
                f"{ends[n] if step >= 72 else ends[n][6:] or ends[n]}</text>"  # narrow: "23:00", then "(2ª)"
            )
    parts.append("</svg>")
    rows = []
    for n in range(len(axis)):
        row = [f"hasta las {ends[n]}"]
        for c, places in zip(curves, at, strict=True):
            reached = [p.total for i, p in zip(places, c.points, strict=True) if i <= n]
            row.append(format_clp(reached[-1]) if reached else "—")
        rows.append(row)
    return Chart(
        id=chart_id,
        title=title,
        description=description,
        svg="".join(parts),
        headers=["Hora", *[c.label for c in curves]],
        rows=rows,
    )


def _night_axis(curves: list[NightCurve]) -> list[tuple[int, bool]]:
    """The hours along the bottom of the comparison: every hour of the night from the earliest any night had to
    the latest, the second pass of an hour where a night had one, less the hours a night's clock skipped and
    no night had."""
    had = {p.slot for c in curves for p in c.points}
    if not had:
        return []
    skipped = set()
    for c in curves:
        hours = {p.hour for p in c.points}
        skipped |= {h for h in range(c.points[0].hour, c.points[-1].hour) if h not in hours} if c.points else set()
    first, last = min(h for h, _ in had), max(h for h, _ in had)
    return sorted(had | {(h, False) for h in range(first, last + 1) if h not in skipped})


def _places(curve: NightCurve, index: dict[tuple[int, bool], int]) -> list[int]:
    """Where a night's points stand along the bottom: at the end of their hour, or, for an hour the night's clock
    showed once where another night's showed it twice, at the end of the second pass (where both clocks read the
    next hour)."""
    own = {p.slot for p in curve.points}
    return [
        index[(p.hour, True)] if (p.hour, True) in index and (p.hour, True) not in own else index[p.slot]
        for p in curve.points
    ]


def _hour(hour_of_night: int) -> str:
    return f"{hour_of_night % 24:02d}:00"


def _night_hour_label(slot: tuple[int, bool]) -> str:
    hour, again = slot
    return f"{_hour(hour)} (2ª)" if again else _hour(hour)


def comparison_chart(f: JornadaFigures, chart_id: str = "mismo-dia") -> Chart:
    return lines_chart(
        chart_id,
        "Comparación con el mismo día de semanas anteriores",
        f"Monto vendido acumulado hora a hora: esta jornada y las {len(f.night_curves) - 1} anteriores del mismo "
        f"día de la semana, hora de {f.timezone}.",
        f.night_curves,
    )


def _minutes(f: JornadaFigures) -> int:
    return int(f.terminal_window.total_seconds() // 60) if f.terminal_window else 0


def all_charts(f: JornadaFigures) -> list[Chart]:
    """Every chart of a jornada's (or a session's) figures, in the order the pages show them."""
    charts = [night_chart(f), hours_chart(f)]
    if f.session_id is None:
        charts.append(register_chart(f))
    charts += [provider_chart(f), category_chart(f), approval_chart(f), approval_time_chart(f)]
    if f.night_curves:
        charts.append(comparison_chart(f))
    return charts
