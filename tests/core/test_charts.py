"""The charts are SVG a browser and a screen reader can read: parsed here, bars and marks counted."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from caja_core.dashboard import charts
from caja_core.dashboard.rollups import quarter_of
from caja_core.dashboard.service import (
    FallbackMark,
    Figure,
    JornadaFigures,
    NightCurve,
    NightPoint,
    TerminalFigures,
    night_curve,
    time_line,
)
from caja_core.jornadas.service import JornadaOut

SVG = "{http://www.w3.org/2000/svg}"
SANTIAGO = ZoneInfo("America/Santiago")
START = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)  # 23:00 in Santiago


def figures(**kw) -> JornadaFigures:
    jornada = JornadaOut(id=1, venue_id=1, label_date=date(2026, 11, 27), status="open", opened_at=START, opened_by=1)
    return JornadaFigures(jornada=jornada, timezone="America/Santiago", generated_at=START, **kw)


def parse(chart: charts.Chart) -> ET.Element:
    root = ET.fromstring(chart.svg)
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    labelled = root.get("aria-labelledby").split()
    assert [root.find(f"{SVG}title").get("id"), root.find(f"{SVG}desc").get("id")] == labelled
    return root


def bars(root: ET.Element) -> list[ET.Element]:
    return [e for e in root.iter(f"{SVG}rect") if e.get("class") == "bar"]


def test_the_night_has_one_bar_per_quarter_hour_and_one_mark_per_fallback():
    q0 = int(START.timestamp()) // 900
    quarters, hours = time_line({q0: [2, 13000], q0 + 1: [1, 5500], q0 + 5: [1, 6000]}, "America/Santiago")
    f = figures(
        quarters=quarters,
        hours=hours,
        fallbacks=[
            FallbackMark(
                at=START + timedelta(minutes=20),
                register_code="BARRA1",
                from_provider="getnet",
                to_provider="klap",
                reason="Terminal sin conexión",
                override=False,
            ),
            FallbackMark(
                at=START + timedelta(minutes=70),
                register_code="BARRA2",
                from_provider="getnet",
                to_provider="klap",
                reason="Tiempo agotado",
                override=False,
            ),
        ],
    )
    chart = charts.night_chart(f)
    root = parse(chart)
    drawn = bars(root)
    assert len(drawn) == 6  # 23:00 … 00:15, the empty quarters included
    assert [b.find(f"{SVG}title").text for b in drawn][:2] == ["23:00: $13.000", "23:15: $5.500"]
    heights = [float(b.get("height")) for b in drawn]
    assert heights[2] == 0 and heights[0] == max(heights)
    assert abs(heights[1] / heights[0] - 5500 / 13000) < 0.001
    marks = [g for g in root.iter(f"{SVG}g") if g.get("class") == "mark"]
    assert len(marks) == 2
    assert marks[0].find(f"{SVG}title").text == "23:20 BARRA1: getnet → klap (Terminal sin conexión)"
    # The mark of 23:20 sits a third into the second quarter.
    x0 = float(drawn[0].get("x")) - float(drawn[0].get("width")) * 0.125
    step = float(drawn[1].get("x")) - float(drawn[0].get("x"))
    assert abs(float(marks[0].find(f"{SVG}line").get("x1")) - (x0 + step * 20 / 15)) < 0.2
    assert chart.rows[0] == ["23:00", "$13.000"] and len(chart.rows) == 8
    assert len(bars(parse(charts.hours_chart(f)))) == 2


def test_rows_charts_have_one_bar_per_register_provider_and_terminal():
    f = figures(
        by_register=[Figure(key=k, label=k, count=1, amount=a) for k, a in (("BARRA1", 90000), ("PUERTA", 30000))],
        by_provider=[
            Figure(key="cash", label="Efectivo", count=3, amount=50000),
            Figure(key="getnet", label="getnet", count=4, amount=60000),
            Figure(key="klap", label="klap", count=1, amount=10000),
        ],
        terminals=[
            TerminalFigures(
                register_id=1,
                register_code="BARRA1",
                provider_id="getnet",
                breaker_state="closed",
                breaker_label="Normal",
                last_heartbeat=None,
                attempts=10,
                approved=9,
                not_approved=1,
                average_approval_s=4.25,
                slowest_approval_s=9.5,
            ),
            TerminalFigures(
                register_id=2,
                register_code="PUERTA",
                provider_id="getnet",
                breaker_state="open",
                breaker_label="Fuera de servicio",
                last_heartbeat=None,
            ),
        ],
    )
    registers = parse(charts.register_chart(f))
    assert [b.find(f"{SVG}title").text for b in bars(registers)] == ["BARRA1: $90.000", "PUERTA: $30.000"]
    assert abs(float(bars(registers)[1].get("width")) * 3 - float(bars(registers)[0].get("width"))) < 0.5
    assert len(bars(parse(charts.provider_chart(f)))) == 3
    approval = charts.approval_chart(f)
    assert [b.find(f"{SVG}title").text for b in bars(parse(approval))] == ["BARRA1: 90 % de 10"]  # no data: no bar
    timing = charts.approval_time_chart(f)
    assert timing.rows == [["BARRA1", "4,2 s (máx. 9,5 s)"]]


def test_an_empty_night_says_so_and_text_is_escaped():
    chart = charts.night_chart(figures())
    root = parse(chart)
    assert bars(root) == [] and chart.empty
    assert "Sin ventas aún" in chart.svg
    f = figures(by_register=[Figure(key="<b>&", label="<b>&", count=1, amount=1000)])
    root = parse(charts.register_chart(f))  # parses: the label is escaped
    assert bars(root)[0].find(f"{SVG}title").text == "<b>&: $1.000"


def test_all_charts_of_a_jornada_and_of_a_session():
    assert [c.id for c in charts.all_charts(figures())] == [
        "ventas-15min",
        "ventas-hora",
        "ventas-caja",
        "ventas-proveedor",
        "ventas-categoria",
        "aprobacion-terminal",
        "tiempo-aprobacion",
    ]
    assert "ventas-caja" not in [c.id for c in charts.all_charts(figures(session_id=3))]
    compared = figures(night_curves=[NightCurve(label="Esta (27-11-2026)", points=[NightPoint(23, 1000)])])
    assert charts.all_charts(compared)[-1].id == "mismo-dia"


def test_a_bad_quarter_hour_is_one_mark_naming_its_fallbacks():
    q0 = int(START.timestamp()) // 900
    quarters, _ = time_line({q0: [1, 1000], q0 + 1: [1, 1000]}, "America/Santiago")
    events = [
        FallbackMark(
            at=START + timedelta(minutes=16 + n),
            register_code=f"BARRA{n}",
            from_provider="getnet",
            to_provider="klap",
            reason="Terminal sin conexión",
            override=False,
        )
        for n in range(7)
    ]
    root = parse(charts.night_chart(figures(quarters=quarters, fallbacks=events)))
    marks = [g for g in root.iter(f"{SVG}g") if g.get("class") == "mark"]
    assert len(marks) == 1
    text = marks[0].find(f"{SVG}title").text
    assert text.startswith("7 cambios al respaldo: 23:16 BARRA0: getnet → klap") and text.endswith(" y 2 más")
    assert "(7)" in root.find(f"{SVG}desc").text


def test_the_same_weekday_comparison_has_one_line_per_night_and_one_point_per_hour():
    # Tonight from 22:00 to 00:59 so far; two Fridays earlier from 21:00 to 02:59; a Friday with no sales.
    tonight = [NightPoint(h, a) for h, a in [(22, 10000), (23, 25000), (24, 31000)]]
    earlier = [
        NightPoint(h, a) for h, a in [(21, 5000), (22, 9000), (23, 20000), (24, 20000), (25, 41000), (26, 42000)]
    ]
    f = figures(
        night_curves=[
            NightCurve(label="Esta (27-11-2026)", points=tonight),
            NightCurve(label="13-11-2026", points=earlier),
            NightCurve(label="06-11-2026", points=[]),
        ]
    )
    chart = charts.comparison_chart(f)
    root = parse(chart)
    nights = [g for g in root.iter(f"{SVG}g") if (g.get("class") or "").startswith("night ")]
    assert [g.get("class") for g in nights] == ["night night-0", "night night-1"]  # the empty night draws no line
    points = [[c for c in g.iter(f"{SVG}circle") if c.get("class") == "point"] for g in nights]
    assert [len(p) for p in points] == [3, 6]
    # Points go left to right by hour, higher as the night adds up; the same hour is at the same x in every night.
    xs = [[float(c.get("cx")) for c in p] for p in points]
    ys = [[float(c.get("cy")) for c in p] for p in points]
    assert xs[0] == xs[1][1:4] and xs[1] == sorted(xs[1])
    assert ys[1] == sorted(ys[1], reverse=True) and min(ys[1]) < min(ys[0])  # 42 000 is the top
    assert points[0][1].find(f"{SVG}title").text == "Esta (27-11-2026), hasta las 00:00: $25.000"
    assert points[1][-1].find(f"{SVG}title").text == "13-11-2026, hasta las 03:00: $42.000"
    # Each line starts at zero at the start of its first hour.
    polyline = nights[1].find(f"{SVG}polyline").get("points").split()
    axis = next(e for e in root.iter(f"{SVG}line") if e.get("class") == "axis")
    assert len(polyline) == 7 and polyline[0] == f"{float(axis.get('x1')):.1f},{axis.get('y1')}"
    legend = [g.find(f"{SVG}text").text for g in root.iter(f"{SVG}g") if (g.get("class") or "").startswith("legend")]
    assert legend == ["Esta (27-11-2026)", "13-11-2026", "06-11-2026"]
    # The data table: one row per hour, one column per night ("—" before a night's first sale).
    assert chart.headers == ["Hora", "Esta (27-11-2026)", "13-11-2026", "06-11-2026"]
    assert chart.rows[0] == ["hasta las 22:00", "—", "$5.000", "—"]
    assert chart.rows[3] == ["hasta las 01:00", "$31.000", "$20.000", "—"]
    assert chart.rows[-1] == ["hasta las 03:00", "$31.000", "$42.000", "—"]


def test_a_night_adds_up_hour_by_hour_of_the_night_across_midnight_and_a_clock_change():
    q = lambda iso: int(datetime.fromisoformat(iso).timestamp()) // 900  # noqa: E731
    night = [(q("2026-11-27T23:10:00-03:00"), 3500), (q("2026-11-28T01:20:00-03:00"), 2000)]
    assert night_curve(night, date(2026, 11, 27), "America/Santiago") == [
        NightPoint(23, 3500),
        NightPoint(24, 3500),
        NightPoint(25, 5500),
    ]
    # The night the clock goes back, the hour it goes back over is there twice; the night it goes forward, the hour
    # it skips is not there at all.
    back, forward = clock_changes(2026)
    label = (back.astimezone(SANTIAGO) - timedelta(hours=6)).date()
    h = (back - timedelta(minutes=20)).astimezone(SANTIAGO).hour  # the hour before the change (23:00)
    sold = [(back - timedelta(minutes=20), 3500), (back + timedelta(minutes=40), 2000)]
    sold.append((back + timedelta(minutes=65), 6000))
    assert night_curve([(quarter_of(t), a) for t, a in sold], label, "America/Santiago") == [
        NightPoint(h, 3500),
        NightPoint(h, 5500, again=True),
        NightPoint(h + 1, 11500),
    ]
    label = (forward.astimezone(SANTIAGO) - timedelta(hours=6)).date()
    h = (forward - timedelta(minutes=20)).astimezone(SANTIAGO).hour
    sold = [(forward - timedelta(minutes=20), 3500), (forward + timedelta(minutes=10), 2000)]
    assert night_curve([(quarter_of(t), a) for t, a in sold], label, "America/Santiago") == [
        NightPoint(h, 3500),
        NightPoint(h + 2, 5500),
    ]


def clock_changes(year: int) -> tuple[datetime, datetime]:
    """The instants (UTC) Santiago puts its clocks back and forward in ``year``, as zoneinfo knows them."""
    changes = {}
    instant = datetime(year, 1, 1, tzinfo=UTC)
    while instant.year == year:
        before, after = (instant - timedelta(seconds=1)).astimezone(SANTIAGO), instant.astimezone(SANTIAGO)
        if before.utcoffset() != after.utcoffset():
            changes[after.utcoffset() < before.utcoffset()] = instant
        instant += timedelta(minutes=15)
    return changes[True], changes[False]


def test_the_comparison_leaves_out_an_hour_no_night_had():
    # Tonight's clock skipped 00:00; the only earlier night had no sales: no empty hour between 23:00 and 01:00.
    tonight = [NightPoint(23, 3500), NightPoint(25, 5500)]
    chart = charts.comparison_chart(
        figures(night_curves=[NightCurve(label="Esta", points=tonight), NightCurve(label="29-08-2026", points=[])])
    )
    assert chart.rows == [["hasta las 01:00", "$3.500", "—"], ["hasta las 02:00", "$5.500", "—"]]
    root = parse(chart)
    ticks = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "tick"]
    assert ticks == ["01:00", "02:00"]
    (line,) = [g for g in root.iter(f"{SVG}g") if g.get("class") == "night night-0"]
    xs = [float(c.get("cx")) for c in line.iter(f"{SVG}circle")]
    assert xs[1] == max(xs) and xs[1] - xs[0] == xs[0] - float(
        line.find(f"{SVG}polyline").get("points").split()[0].split(",")[0]
    )
