"""A cashier, driving the real POS pages over HTTP the way the browser does: the same form posts and HTMX
requests (``HX-Request: true``, CSRF header), the payment-progress partial polled every second.

Each cashier sells only in a drawer they hold: the first cashier of a register opens its session; a relief
cashier takes the drawer over during the night with a handover (the outgoing cashier finishes the sale at hand
and steps away; the relief counts the drawer blind by denomination and the supervisor types her PIN on the
relief's screen), and from then on sells in it and closes it.

Every request goes to the cashier's usual app instance; when that instance does not answer (it was killed),
the request is not blindly repeated: the cashier looks at the screen again (reloads the sale, the list of
movements) on the other instance and carries on from what it shows, as a person would."""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass, field

import httpx

from .stack import SUPERVISOR, SUPERVISOR_PIN, Instance, Register, Terminal, Venue, control

SALE_LINK = re.compile(r"/caja/venta/(\d+)/")
TOTAL = re.compile(r'id="sale-total">\$([\d.]+)<')
ATTEMPT = re.compile(r'name="attempt_id" value="(\d+)"')
DENOMINATIONS = [20000, 10000, 5000, 2000, 1000, 500, 100, 50, 10]


class Lost(Exception):
    """No answer from the app (connection refused or dropped): the request may or may not have happened."""


@dataclass
class SaleSeen:
    """A sale as the cashier saw it on screen."""

    sale_id: int
    total: int
    register_code: str
    cashier_id: int  # who rang it up
    outcome: str = "pending"  # cash / card / backup / cancelled / pending
    busy: int = 0
    tip: int = 0
    discounted: bool = False


@dataclass
class HandoverSeen:
    """A handover as the relief cashier saw it confirmed on screen."""

    register_code: str
    from_id: int
    to_id: int
    counted: int
    #: Cash the outgoing cashier kept before handing over (the drawer is that much short).
    pocketed: int


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    lost: int = 0
    requests: int = 0
    sales: list[SaleSeen] = field(default_factory=list)
    movements: list[tuple[str, str, int, str]] = field(default_factory=list)  # (register, kind, amount, reason)
    closes: list[tuple[str, str, int]] = field(default_factory=list)  # (register, how, counted)
    close_short: dict[int, int] = field(default_factory=dict)  # closing cashier → how much they miscounted
    handovers: list[HandoverSeen] = field(default_factory=list)
    refusals: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    kills: list[tuple[float, str]] = field(default_factory=list)

    def note(self, kind: str, seconds: float, status: int) -> None:
        self.latencies.setdefault(kind, []).append(seconds)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.requests += 1

    def refused(self, what: str) -> None:
        self.refusals[what] = self.refusals.get(what, 0) + 1


class Browser:
    """One POS browser: a cookie jar (web session in Redis, CSRF cookie) and the app instances."""

    def __init__(self, instances: list[Instance], preferred: int, client_ip: str, stats: Stats) -> None:
        self.instances = instances
        self.preferred = preferred
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(40, connect=2), follow_redirects=False, headers={"X-Forwarded-For": client_ip}
        )
        self.stats = stats
        self.down_until = [0.0] * len(instances)

    def _pick(self) -> int:
        order = [self.preferred] + [i for i in range(len(self.instances)) if i != self.preferred]
        now = time.monotonic()
        for i in order:
            if self.down_until[i] <= now:
                return i
        return min(range(len(self.instances)), key=lambda i: self.down_until[i])

    async def request(
        self, method: str, path: str, data: dict | None = None, *, htmx: bool = False, kind: str = "other"
    ) -> httpx.Response:
        i = self._pick()
        headers = {}
        if htmx:
            headers["HX-Request"] = "true"
        if method == "POST":
            headers["x-csrftoken"] = self.client.cookies.get("caja_csrf") or ""
        start = time.perf_counter()
        try:
            r = await self.client.request(method, self.instances[i].url + path, data=data, headers=headers)
        except httpx.TransportError as exc:
            self.down_until[i] = time.monotonic() + 2.0
            self.stats.lost += 1
            raise Lost(f"{method} {path}: {type(exc).__name__}") from exc
        self.stats.note(kind, time.perf_counter() - start, r.status_code)
        if r.status_code >= 500:
            self.stats.server_errors.append(f"{method} {path} → {r.status_code}: {r.text[:300]!r}")
        return r

    async def until_answered(
        self,
        method: str,
        path: str,
        data: dict | None = None,
        *,
        htmx: bool = False,
        kind: str = "other",
        tries: int = 60,
    ) -> httpx.Response:
        """For requests that are safe to repeat (reads, idempotent posts): repeat until an instance answers."""
        for _ in range(tries):
            try:
                return await self.request(method, path, data, htmx=htmx, kind=kind)
            except Lost:
                await asyncio.sleep(0.5)
        raise RuntimeError(f"no instance answered {method} {path}")

    async def csrf(self) -> None:
        if not self.client.cookies.get("caja_csrf"):
            await self.until_answered("GET", "/login", kind="login_page")

    async def close(self) -> None:
        await self.client.aclose()


def denominations(amount: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for d in DENOMINATIONS:
        q, amount = divmod(amount, d)
        if q:
            out[f"count_{d}"] = str(q)
    return out


@dataclass
class RegisterBook:
    """What the cashiers of one register know about its drawer (for the blind counts) and who holds it."""

    register: Register
    initial_cash: int = 20000
    cash: int = 20000  # what is physically in the drawer
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    holder: Cashier | None = None
    #: The relief asks; the holder finishes the sale at hand and steps away; the relief then counts.
    relief_waiting: asyncio.Event = field(default_factory=asyncio.Event)
    stepped_away: asyncio.Event = field(default_factory=asyncio.Event)
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    selling_over: bool = False
    movement_seq: int = 0
    handovers: int = 0
    miscount: int = 0


class Cashier:
    def __init__(
        self,
        n: int,
        user_id: int,
        book: RegisterBook,
        opener: bool,
        venue: Venue,
        instances: list[Instance],
        stats: Stats,
        rng: random.Random,
        auth_codes,
        relieve_at: float = 0.0,
    ) -> None:
        self.n = n
        self.user_id = user_id
        self.book = book
        self.opener = opener
        self.relieve_at = relieve_at  # for a relief: when (monotonic) they arrive to take the drawer over
        self.venue = venue
        self.stats = stats
        self.rng = rng
        self.auth_codes = auth_codes
        self.browser = Browser(instances, n % len(instances), f"10.1.{n // 200}.{n % 200 + 1}", stats)

    @property
    def terminal(self) -> Terminal:
        return self.book.register.terminal

    async def think(self, low: float = 0.3, high: float = 1.2) -> None:
        await asyncio.sleep(self.rng.uniform(low, high))

    # ---- start of the night ------------------------------------------------------------------------------
    async def log_in(self) -> None:
        b = self.browser
        await b.csrf()
        r = await b.until_answered(
            "POST",
            "/login/pin",
            {"venue_id": self.venue.venue_id, "user_id": self.user_id, "pin": self.venue.pins[self.user_id]},
            kind="login",
        )
        if r.status_code != 303:
            raise RuntimeError(f"cashier {self.n} login refused: {r.status_code} {r.text[:200]}")

    async def open_drawer(self) -> None:
        """The register's first cashier opens its session, counting the initial cash by denomination."""
        b, reg = self.browser, self.book.register
        await b.until_answered("GET", f"/caja/session/open?register_id={reg.id}", kind="page")
        form = {"register_id": str(reg.id), "open_key": f"carga-{reg.code}"} | denominations(self.book.initial_cash)
        r = await b.until_answered("POST", "/caja/session/open", form, kind="open")
        if r.status_code != 303:
            raise RuntimeError(f"{reg.code}: open refused: {r.status_code} {r.text[:300]}")
        self.book.holder = self
        self.book.opened.set()
        await b.until_answered("GET", "/caja/venta", kind="page")

    # ---- the night -----------------------------------------------------------------------------------------
    async def night(self, until: float) -> None:
        """An opener sells from the start; a relief arrives at their moment, takes the drawer over, then sells."""
        if not self.opener:
            await asyncio.sleep(max(0.0, self.relieve_at - time.monotonic()))
            async with self.book.turn:  # reliefs of one register take over in order
                if not await self.take_over(until):
                    return
        await self.work(until)

    async def work(self, until: float) -> None:
        book = self.book
        while time.monotonic() < until and not book.relief_waiting.is_set():
            if self.rng.random() < 0.08:
                await self.cash_movement()
            else:
                await self.sell()
            await self.think(0.5, 2.0)
        if book.relief_waiting.is_set():
            # Handing over: the sale at hand is finished; one outgoing cashier in three keeps $2.000.
            book.relief_waiting.clear()
            book.stepped_away.set()
        else:
            book.selling_over = True

    async def take_over(self, until: float, deadline_s: float = 150) -> bool:
        """Relieve the holder: wait for them to step away, count the drawer blind by denomination, the
        supervisor types her PIN. Retries while a payment of the drawer is still being resolved."""
        b, book, reg = self.browser, self.book, self.book.register
        await book.opened.wait()
        if book.selling_over or time.monotonic() >= until:
            return False  # the night is over at this register: nothing to take over
        book.relief_waiting.set()
        await book.stepped_away.wait()
        book.stepped_away.clear()
        outgoing = book.holder
        assert outgoing is not None
        book.handovers += 1
        pocketed = 2000 if book.handovers % 3 == 1 and reg.code[-1] in "13579" else 0
        book.cash -= pocketed
        counted = book.cash
        form = {
            "register_id": str(reg.id),
            "note": "Cambio de turno",
            "supervisor_code": SUPERVISOR_PIN,
        } | denominations(counted)
        await b.until_answered("GET", f"/caja/session/relevo?register_id={reg.id}", kind="page")
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            try:
                r = await b.request("POST", "/caja/session/relevo", form, kind="handover")
            except Lost:
                await asyncio.sleep(0.5)
                continue  # repeated: a handover that did land answers "ya tiene esta caja"
            if r.status_code == 200 and 'id="takeover-result"' in r.text:
                break
            if r.status_code == 409 and "ya tiene esta caja" in r.text:
                # The first try landed on an instance that died before answering: go on in the drawer.
                r = await b.until_answered("POST", "/caja/session/resume", {"register_id": str(reg.id)}, kind="open")
                if r.status_code == 303:
                    break
            if "pagos sin resolver" in r.text:
                self.stats.refused("handover: unresolved payments (waited)")
                await asyncio.sleep(2)
                continue
            self.stats.problems.append(f"{reg.code}: handover refused {r.status_code}: {r.text[:300]!r}")
            await asyncio.sleep(2)
        else:
            self.stats.problems.append(f"{reg.code}: handover not done after {deadline_s} s")
            book.holder = outgoing
            return False
        self.stats.handovers.append(HandoverSeen(reg.code, outgoing.user_id, self.user_id, counted, pocketed))
        book.holder = self
        await b.until_answered("GET", "/caja/venta", kind="page")
        return True

    async def sell(self) -> None:
        b = self.browser
        for _ in range(self.rng.randint(1, 3)):
            product_id, _ = self.rng.choice(self.venue.products)
            # The cart lives in the shared web session: a tap that got no answer is tapped again (on the other
            # instance); if the first one did land, the cart shows one more item and the total says so.
            await b.until_answered("POST", "/caja/venta/item", {"product_id": str(product_id)}, htmx=True, kind="item")
            await self.think(0.2, 0.6)
        r = await b.until_answered("POST", "/caja/venta/cobrar", htmx=True, kind="checkout")
        if r.status_code != 200:
            self.stats.refused(f"checkout {r.status_code}")
            await self.next_sale()
            return
        found, total = SALE_LINK.search(r.text), TOTAL.search(r.text)
        if not found or not total:
            self.stats.problems.append(f"checkout without a sale link: {r.text[:200]!r}")
            return
        sale = SaleSeen(
            sale_id=int(found.group(1)),
            total=int(total.group(1).replace(".", "")),
            register_code=self.book.register.code,
            cashier_id=self.user_id,
        )
        self.stats.sales.append(sale)
        await self.think()
        await self.discount_and_tip(sale)
        roll = self.rng.random()
        if roll < 0.05:
            await self.cancel(sale)
        elif roll < 0.45:
            await self.pay_cash(sale)
        else:
            await self.pay_card(sale)
        await self.next_sale()

    async def discount_and_tip(self, sale: SaleSeen) -> None:
        """Some customers get $1.000 off the whole sale (a regular), some leave about 10 % as a tip, in
        round hundreds (the drawer has no coins under $10): the dashboard's product mix, tips and totals must
        still add up to the sales."""
        b = self.browser
        if self.rng.random() < 0.15:
            r = await b.until_answered(
                "POST",
                f"/caja/venta/{sale.sale_id}/descuento",
                {"line": "", "kind": "amount", "value": "1000", "reason": "Cliente frecuente"},
                htmx=True,
                kind="discount",
            )
            total = TOTAL.search(r.text)
            if r.status_code == 200 and total:
                sale.total, sale.discounted = int(total.group(1).replace(".", "")), True
            else:
                self.stats.refused(f"discount {r.status_code}")
        if self.rng.random() < 0.3:
            tip = max(100, (sale.total // 10 + 50) // 100 * 100)
            r = await b.until_answered(
                "POST", f"/caja/venta/{sale.sale_id}/propina", {"tip": str(tip)}, htmx=True, kind="tip"
            )
            if r.status_code == 200:
                sale.tip = tip
            else:
                self.stats.refused(f"tip {r.status_code}")

    async def panel(self, sale: SaleSeen) -> str:
        r = await self.browser.until_answered("GET", f"/caja/venta/{sale.sale_id}/pago", htmx=True, kind="poll")
        return r.text

    def read_outcome(self, sale: SaleSeen, html: str) -> bool:
        """Update ``sale`` from a panel; True when the sale is over (paid or cancelled)."""
        if 'id="receipt"' in html:
            if "Vuelto" in html:
                sale.outcome = "cash"
            else:
                sale.outcome = "backup" if "(respaldo)" in html else "card"
            return True
        if 'id="cancelled"' in html:
            sale.outcome = "cancelled"
            return True
        return False

    async def pay_cash(self, sale: SaleSeen) -> None:
        due = sale.total + sale.tip
        received = next(b for b in [due, 5000, 10000, 20000, 50000, due] if b >= due)
        for _ in range(40):
            try:
                r = await self.browser.request(
                    "POST",
                    f"/caja/venta/{sale.sale_id}/efectivo",
                    {"cash_received": str(received)},
                    htmx=True,
                    kind="pay_cash",
                )
                html = r.text
            except Lost:
                html = await self.panel(sale)  # did it go through? look at the sale again
            if self.read_outcome(sale, html):
                if sale.outcome == "cash":
                    self.book.cash += sale.total + sale.tip  # the tip stays in the drawer
                return
            if 'id="pay"' not in html:
                await asyncio.sleep(1)  # a card payment of this sale is still running: wait for it
        self.stats.problems.append(f"sale {sale.sale_id}: cash payment never shown as paid")

    async def cancel(self, sale: SaleSeen) -> None:
        for _ in range(20):
            try:
                r = await self.browser.request(
                    "POST",
                    f"/caja/venta/{sale.sale_id}/anular",
                    {"reason": "Cliente se arrepintió"},
                    htmx=True,
                    kind="cancel",
                )
                if r.status_code == 200 and r.headers.get("hx-redirect"):
                    sale.outcome = "cancelled"
                    return
            except Lost:
                pass
            if self.read_outcome(sale, await self.panel(sale)):
                return
            await asyncio.sleep(0.5)
        self.stats.problems.append(f"sale {sale.sale_id}: cancellation never shown")

    async def pay_card(self, sale: SaleSeen) -> None:
        b = self.browser
        if self.terminal.profile == "flaky" and self.rng.random() < 0.3:
            async with httpx.AsyncClient() as client:
                await control(client, self.terminal, "POST", "/faults", {"kind": "decline", "code": 5})
        try:
            r = await b.request("POST", f"/caja/venta/{sale.sale_id}/tarjeta", htmx=True, kind="card_start")
            html, status = r.text, r.status_code
        except Lost:
            html, status = await self.panel(sale), 200
        if status == 409 and "ocupado" in html.lower():
            sale.busy += 1
        give_up = time.monotonic() + 150
        retried = False
        while time.monotonic() < give_up:
            if self.read_outcome(sale, html):
                return
            if 'id="manual-form"' in html:
                attempt = ATTEMPT.search(html)
                await self.think(1.0, 2.5)  # the customer taps the card on the backup phone
                try:
                    r = await b.request(
                        "POST",
                        f"/caja/venta/{sale.sale_id}/respaldo/confirmar",
                        {
                            "attempt_id": attempt.group(1) if attempt else "0",
                            "authorization_code": next(self.auth_codes),
                            "last4": "4242",
                            "brand": "Visa",
                            "card_type": "debito",
                        },
                        htmx=True,
                        kind="backup_confirm",
                    )
                    html = r.text
                    if r.status_code != 200:
                        self.stats.refused(f"backup confirm {r.status_code}")
                        html = await self.panel(sale)
                except Lost:
                    html = await self.panel(sale)
                continue
            if 'id="start-backup"' in html:
                await self.think(0.3, 0.8)
                try:
                    r = await b.request("POST", f"/caja/venta/{sale.sale_id}/respaldo", htmx=True, kind="backup_start")
                    html = r.text
                except Lost:
                    html = await self.panel(sale)
                continue
            if 'id="pay"' in html:
                # Declined, terminal busy, or not charged without a backup offer: the customer pays in cash
                # (or tries the card once more).
                if not retried and self.rng.random() < 0.5:
                    retried = True
                    await asyncio.sleep(1)
                    try:
                        r = await b.request("POST", f"/caja/venta/{sale.sale_id}/tarjeta", htmx=True, kind="card_start")
                        html = r.text
                        if r.status_code == 409 and "ocupado" in html.lower():
                            sale.busy += 1
                    except Lost:
                        html = await self.panel(sale)
                    continue
                await self.pay_cash(sale)
                return
            await asyncio.sleep(1.0)  # the page polls every second
            try:
                r = await b.request("GET", f"/caja/venta/{sale.sale_id}/pago", htmx=True, kind="poll")
                html = r.text
            except Lost:
                await asyncio.sleep(0.5)
        self.stats.problems.append(f"sale {sale.sale_id}: card payment still unresolved after 150 s")

    async def next_sale(self) -> None:
        await self.browser.until_answered("POST", "/caja/venta/siguiente", htmx=True, kind="next")

    async def cash_movement(self) -> None:
        b, book = self.browser, self.book
        book.movement_seq += 1
        form = {}
        if book.cash > 40000 and self.rng.random() < 0.6:
            # Everything above $20.000 of change goes to the safe: up to the venue's limit ($20.000) the cashier
            # takes it out alone; above it, the supervisor types her PIN on the cashier's screen.
            kind, amount = "out", (book.cash - 20000) // 5000 * 5000
            if amount > 20000:
                form["supervisor_code"] = SUPERVISOR_PIN
        else:
            kind, amount = "in", 5000
        reason = f"{'Retiro a bóveda' if kind == 'out' else 'Sencillo'} {book.register.code}-{book.movement_seq}"
        form |= {"kind": kind, "amount": str(amount), "reason": reason}
        for _ in range(20):
            try:
                r = await b.request("POST", "/caja/movimientos", form, kind="movement")
                if r.status_code == 303:
                    break
                self.stats.refused(f"movement {r.status_code}")
                return
            except Lost:
                page = await b.until_answered("GET", "/caja/movimientos", kind="page")
                if reason in page.text:
                    break
        else:
            self.stats.problems.append(f"{reason}: movement never recorded")
            return
        book.cash += amount if kind == "in" else -amount
        self.stats.movements.append((book.register.code, kind, amount, reason))

    # ---- end of the night ----------------------------------------------------------------------------------
    async def close_session(self, deadline_s: float = 150) -> None:
        """Blind close by denomination by the drawer's holder, once selling is over. Retries while the server
        refuses because a payment is still being resolved; a difference goes to the supervisor (her PIN)."""
        b, book = self.browser, self.book
        await b.until_answered("GET", "/caja/session/close", kind="page")
        counted = book.cash - book.miscount
        self.stats.close_short[self.user_id] = self.stats.close_short.get(self.user_id, 0) + book.miscount
        form = denominations(counted) | {"note": ""}
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            r = await b.until_answered("POST", "/caja/session/close", form, kind="close")
            if r.status_code == 200 and "Caja cerrada" in r.text:
                self.stats.closes.append((book.register.code, "closed", counted))
                return
            if (r.status_code == 200 and "pendiente de aprobación" in r.text) or "en cierre" in r.text:
                r = await b.until_answered(
                    "POST",
                    "/caja/session/close/aprobar",
                    {"supervisor_code": SUPERVISOR_PIN, "note": "Diferencia revisada con la supervisora"},
                    kind="close_approve",
                )
                if r.status_code == 200 and "Caja cerrada" in r.text:
                    self.stats.closes.append((book.register.code, "approved", counted))
                    return
            if "ya está cerrada" in r.text or r.status_code == 303:
                self.stats.closes.append((book.register.code, "closed", counted))
                return
            if "pagos sin resolver" in r.text:
                self.stats.refused("close: unresolved payments (waited)")
                await asyncio.sleep(2)
                continue
            self.stats.problems.append(f"{book.register.code}: close refused {r.status_code}: {r.text[:300]!r}")
            await asyncio.sleep(2)
        self.stats.problems.append(f"{book.register.code}: session not closed after {deadline_s} s")


async def close_jornada(instances: list[Instance], venue: Venue, stats: Stats) -> bool:
    b = Browser(instances, 0, "10.9.9.9", stats)
    try:
        await b.csrf()
        r = await b.until_answered(
            "POST",
            "/login",
            {"venue_id": str(venue.venue_id), "username": SUPERVISOR[0], "password": SUPERVISOR[1]},
            kind="login",
        )
        if r.status_code != 303:
            stats.problems.append(f"supervisor login refused: {r.status_code} {r.text[:200]}")
            return False
        r = await b.until_answered(
            "POST", "/jornada/cerrar", {"jornada_id": str(venue.jornada_id)}, kind="jornada_close"
        )
        if r.status_code != 303:
            stats.problems.append(f"jornada close refused: {r.status_code} {r.text[:300]!r}")
            return False
        return True
    finally:
        await b.close()
