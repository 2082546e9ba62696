"""The baseline of P2 and P6: a minimal Litestar app with one Jinja template handler, no database, no
middleware, served by uvicorn exactly like ``caja serve`` (``python -m uvicorn bench.load.baseline_app:app``)."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar, get
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template.config import TemplateConfig

LINES = [
    {"quantity": n % 3 + 1, "name": f"Producto {n}", "amount": f"${(n + 1) * 1500:,}".replace(",", ".")}
    for n in range(4)
]


@get("/partial/{sale_id:int}")
async def partial(sale_id: int) -> Template:
    return Template(
        template_name="partial.html",
        context={"sale_id": sale_id, "total": "$12.500", "lines": LINES, "state": "Esperando al terminal"},
    )


@get("/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


app = Litestar(
    route_handlers=[partial, live],
    template_config=TemplateConfig(directory=Path(__file__).parent / "baseline_templates", engine=JinjaTemplateEngine),
)
