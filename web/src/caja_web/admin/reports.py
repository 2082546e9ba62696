"""/admin/cajas/reportes: per jornada and per session totals, differences, fallback events, incidents, the
attempt log with filters, CSV download and a printable Z report (supervisors and admins)."""

from __future__ import annotations

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from caja_core.dashboard import charts as dashboard_charts
from caja_core.dashboard import service as dashboard
from caja_core.jornadas import service as jornadas
from caja_core.reports import service as reports
from caja_core.sales import mix

from ..context import Web

ATTEMPT_STATES = (
    "approved",
    "declined",
    "failed_not_sent",
    "in_doubt",
    "reconciling",
    "manual_pending",
    "approved_manual",
    "verified",
    "disputed",
    "awaiting",
    "sending",
    "created",
    "cancelled",
)


class LogFilter(msgspec.Struct, kw_only=True):
    provider: str | None = None
    state: str | None = None


async def figures_context(web: Web, *, jornada_id: int | None = None, session_id: int | None = None) -> dict:
    """The charts and figure tables of a jornada or a session (``dashboard/_figures.html``)."""
    if session_id is not None:
        figures = await web.call(dashboard.session_figures, web.venue_id, session_id)
    elif jornada_id is not None:
        figures = await web.call(dashboard.jornada_figures, web.venue_id, jornada_id)
    else:
        return {"f": None, "charts": {}}
    return {
        "f": figures,
        "charts": {c.id: c for c in dashboard_charts.all_charts(figures)},
        "modifier_mix": await web.call(mix.modifier_mix, web.venue_id, jornada_id=jornada_id, session_id=session_id),
    }


async def jornada_context(web: Web, jornada_id: int | None, flt: LogFilter) -> dict:
    recent = await web.call(jornadas.list_jornadas, web.venue_id)
    jornada_id = jornada_id or (recent[0].id if recent else None)
    report = await web.call(reports.jornada_report, web.venue_id, jornada_id) if jornada_id else None
    log = (
        await web.call(
            reports.attempt_log,
            web.venue_id,
            jornada_id=jornada_id,
            provider_id=flt.provider or None,
            state=flt.state or None,
        )
        if jornada_id
        else []
    )
    return {
        "jornadas": recent,
        "report": report,
        "attempts": log,
        "filter": flt,
        "states": ATTEMPT_STATES,
        "providers": [p.id for p in web.registry.all()],
        **await figures_context(web, jornada_id=jornada_id),
    }


@get("/cajas/reportes")
async def reports_page(
    web: NamedDependency[Web],
    jornada_id: FromQuery[int | None] = None,
    provider: FromQuery[str | None] = None,
    estado: FromQuery[str | None] = None,
) -> Template:
    ctx = await jornada_context(web, jornada_id, LogFilter(provider=provider, state=estado))
    return await web.page("admin/reports.html", partial_template="admin/_attempt_log.html", **ctx)


@get("/cajas/reportes/jornada/{jornada_id:int}")
async def jornada_page(
    web: NamedDependency[Web],
    jornada_id: FromPath[int],
    provider: FromQuery[str | None] = None,
    estado: FromQuery[str | None] = None,
) -> Template:
    ctx = await jornada_context(web, jornada_id, LogFilter(provider=provider, state=estado))
    return await web.page("admin/reports.html", partial_template="admin/_attempt_log.html", **ctx)


@get("/cajas/reportes/jornada/{jornada_id:int}/csv")
async def jornada_csv(web: NamedDependency[Web], jornada_id: FromPath[int]) -> Response:
    report = await web.call(reports.jornada_report, web.venue_id, jornada_id)
    filename = f"jornada-{report.jornada.label_date.isoformat()}.csv"
    return Response(
        reports.jornada_csv(report).encode("utf-8-sig"),
        media_type="text/csv",  # the framework adds the charset of text types
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@get("/cajas/reportes/jornada/{jornada_id:int}/z")
async def z_report(web: NamedDependency[Web], jornada_id: FromPath[int]) -> Template:
    report = await web.call(reports.jornada_report, web.venue_id, jornada_id)
    return await web.page("admin/z_report.html", report=report, **await figures_context(web, jornada_id=jornada_id))


@get("/cajas/reportes/sesion/{session_id:int}")
async def session_page(web: NamedDependency[Web], session_id: FromPath[int]) -> Template:
    report = await web.call(reports.session_report, web.venue_id, session_id)
    attempts = await web.call(reports.attempt_log, web.venue_id, session_id=session_id)
    return await web.page(
        "admin/session_report.html",
        report=report,
        attempts=attempts,
        **await figures_context(web, session_id=session_id),
    )


route_handlers = [reports_page, jornada_page, jornada_csv, z_report, session_page]
