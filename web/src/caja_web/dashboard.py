"""/jornada/tablero: the night at a glance for supervisors and admins, refreshing itself (HTMX polling)."""

from __future__ import annotations

from litestar import Request, Router, get
from litestar.response import Template

from caja_core.dashboard import charts
from caja_core.dashboard import service as dashboard

from .auth import SUPERVISOR, requires
from .context import Web

#: How often the page asks for fresh figures.
POLL_SECONDS = 5


async def live_context(web: Web) -> dict:
    # Two statements, each a snapshot of its own: the open jornada, then all its figures at once.
    async with web.db.statement_reader() as s:
        figures = await dashboard.current_figures(s, web.venue_id)
    return {
        "f": figures,
        "charts": {c.id: c for c in charts.all_charts(figures)} if figures else {},
        "poll_seconds": POLL_SECONDS,
    }


@get("/")
async def live_page(request: Request) -> Template:
    """The full page on a normal request; only the figures (``dashboard/_live.html``) on the page's polls."""
    web = Web(request)
    return await web.page("dashboard/live.html", partial_template="dashboard/_live.html", **await live_context(web))


router = Router(
    path="/jornada/tablero",
    include_in_schema=False,
    guards=[requires(*SUPERVISOR)],
    route_handlers=[live_page],
)
