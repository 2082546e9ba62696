"""What the POS browser tests do on the shared stack (the fixtures ``site``, ``browser``, ``terminal`` and
``backup`` of conftest.py): the site's database for what another device or a supervisor does, and a cashier
logged in at the register."""

from __future__ import annotations

from livesite import LiveSite
from posbrowser import Cashier, login_cashier, new_tab, open_register, run

from caja_core.db import Database


async def _with_db(url: str, work):
    db = Database(url)
    try:
        async with db.session() as s:
            return await work(s)
    finally:
        await db.dispose()


def core(site: LiveSite, work):
    """Run ``work(s)`` on the site's database in one transaction (what another device or a supervisor does)."""
    return run(_with_db(site.database_url, work))


def cashier_at(browser, site, size=(1024, 768)) -> Cashier:
    page = new_tab(browser, site.url, size)
    login_cashier(page)
    open_register(page, site.setup.register_id)
    return Cashier(page)
