"""The cashier's POS: choose a register, open the session, sell (cash or card with fallback), cash in/out,
incidents, blind close. Every page is a full page on a normal request and a partial on an HTMX request."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from caja_core.audit import service as audit
from caja_core.catalog import service as catalog
from caja_core.clock import utcnow
from caja_core.errors import Conflict, ValidationFailed
from caja_core.jornadas import service as jornadas
from caja_core.money import parse_amount
from caja_core.ops import contingency
from caja_core.permissions import Action
from caja_core.permissions import service as permissions
from caja_core.registers import service as registers
from caja_core.sales import discounts, tips, waiting
from caja_core.sales import screen as screens
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.text import clean_reason
from caja_core.users import service as users
from caja_core.venues import service as venues

from ..auth import CASHIER, FORM, requires
from ..context import Web
from ..printing import after_movement, after_sale
from . import cart as carts
from . import offline
from .cart import Line, PosState
from .messages import outcome

INCIDENT_KINDS = {
    "terminal": "Terminal caído",
    "printer": "Impresora",
    "network": "Red / internet",
    "double_charge": "Posible doble cobro",
    "cash": "Efectivo",
    "other": "Otro",
}


# ---- forms ----------------------------------------------------------------------------------------------
class ResumeForm(msgspec.Struct, kw_only=True):
    register_id: int = 0


class AddItem(msgspec.Struct, kw_only=True):
    product_id: int = 0
    quantity: int = 1
    v: int | None = None  # the cart version the tab shows
    #: The modifiers ticked in the product's chooser (one value per box; a form sends one or several).
    modifier_id: list[int] | int | None = None
    chooser: int = 0  # 1: sent by the product's modifier chooser (its groups are checked before the line is added)

    @property
    def modifier_ids(self) -> list[int]:
        chosen = self.modifier_id if isinstance(self.modifier_id, list) else [self.modifier_id]
        return [m for m in chosen if m is not None]


class CartForm(msgspec.Struct, kw_only=True):
    v: int | None = None


class FreeLine(msgspec.Struct, kw_only=True):
    name: str = ""
    amount: str = ""
    reason: str = ""
    v: int | None = None


class LineChange(msgspec.Struct, kw_only=True):
    index: int = -1
    delta: int = 0
    v: int | None = None


class CashForm(msgspec.Struct, kw_only=True):
    cash_received: str = ""


class CashPartForm(msgspec.Struct, kw_only=True):
    cash_part: str = ""
    paid: str = ""  # the cash parts the screen showed as already paid


class CancelForm(msgspec.Struct, kw_only=True):
    reason: str = ""
    supervisor_code: str = ""
    panel: str = ""  # "receipt" when the void of a paid sale is asked from its receipt


class MovementForm(msgspec.Struct, kw_only=True):
    kind: str = ""
    amount: str = ""
    reason: str = ""
    supervisor_code: str = ""


class IncidentForm(msgspec.Struct, kw_only=True):
    kind: str = ""
    description: str = ""


class CloseForm(msgspec.Struct, kw_only=True):
    note: str = ""


class ApproveForm(msgspec.Struct, kw_only=True):
    supervisor_code: str = ""
    note: str = ""


def echo(data: msgspec.Struct) -> dict:
    """A form's fields to show again, without the supervisor's code."""
    return {k: v for k, v in msgspec.to_builtins(data).items() if k != "supervisor_code"}


async def supervisor_for(web: Web, action: Action, code: str, **scope) -> int:
    """Who stands behind ``action``: the user alone when their role allows it, else the supervisor whose PIN or
    badge was typed (their authorization is checked and used up by the core)."""
    grant = await web.authorize(action, code, **scope)
    decision = await web.venue_call(
        permissions.require, action=action, actor_id=web.user_id, authorization_id=grant, **scope
    )
    return decision.authorized_by or web.user_id


async def form_dict(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def form_int(value: str | None) -> int:
    """An id typed in a form: ASCII digits that fit a database integer, else 0 (which is found nowhere)."""
    value = (value or "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else 0


def denomination_count(form: dict[str, str], prefix: str) -> dict[str, str]:
    return {k[len(prefix) :]: v for k, v in form.items() if k.startswith(prefix) and v.strip()}


# ---- context builders -----------------------------------------------------------------------------------
def pos_state(web: Web) -> PosState:
    return carts.load(web.session)


async def home_context(web: Web) -> dict:
    current = await web.call(jornadas.current_jornada, web.venue_id)
    open_sessions = await web.call(sessions.list_sessions, web.venue_id, jornada_id=current.id) if current else []
    return {
        "registers": await web.call(registers.list_registers, web.venue_id, only_active=True),
        "open_by_register": {s.register_id: s for s in open_sessions if s.status != "closed"},
        "holders": await web.call(users.user_names, web.venue_id),
        "state": pos_state(web),
        "current": current,
    }


async def open_context(web: Web, register_id: int | None = None) -> dict:
    return {
        "registers": await web.call(registers.list_registers, web.venue_id, only_active=True),
        "venue": await web.call(venues.get_venue, web.venue_id),
        "register_id": register_id,
        "state": pos_state(web),
    }


async def screen_context(web: Web, state: PosState, sale: sales.SaleOut | None = None) -> dict:
    """The sale screen around the panel: the register's quick keys (the sale's register when one is shown)."""
    register_id, session_id = (sale.register_id, sale.session_id) if sale else (state.register_id, state.session_id)
    register = await web.call(registers.get_register, web.venue_id, register_id)
    status = None
    if state.session_id is not None and session_id == state.session_id:
        status = await web.venue_call(
            screens.screen_status,
            session_id=session_id,
            user_id=web.user_id,
            timezone=web.viewer.timezone if web.viewer else None,
        )
    products = await web.call(catalog.list_products, web.venue_id, register_id=register.id)
    return {
        "register": register,
        "state": state,
        "status": status,
        "parked": await parked_sales(web, state),
        "session": await web.call(sessions.get_session, web.venue_id, session_id),
        "categories": await web.call(catalog.list_categories, web.venue_id, active_only=True),
        "products": products,
        "modifiers": catalog.modifiers_by_product(
            products, await web.call(catalog.list_modifiers, web.venue_id, active_only=True)
        ),
    }


class ParkedSale(msgspec.Struct, kw_only=True):
    """A sale left waiting, as the "ventas en espera" list shows it."""

    id: int
    total: int
    kind: str  # in_doubt / approved / not_charged / cancelled / charging
    headline: str


async def parked_sales(web: Web, state: PosState) -> list[ParkedSale]:
    """The register's ventas en espera (from the database: any device, any cashier of the session, after a logout
    or a restart), each with how its payment stands now; the sale this browser is charging is not among them."""
    if state.session_id is None:
        return []
    found = []
    for sale in await web.call(waiting.waiting_sales, web.venue_id, state.session_id, with_open=True):
        if sale.id == state.sale_id:
            continue
        if sale.status == "cancelled":
            found.append(ParkedSale(id=sale.id, total=sale.total, kind="cancelled", headline="ANULADA"))
            continue
        progress = await web.poll(sale.id, sale)
        if sale.status == "paid":
            kind, headline = "approved", ("APROBADO" if sale.payment_method != "cash" else "PAGADO")
        else:
            shown = outcome(progress)
            kind, headline = shown.kind, shown.headline
            if not sale.parked and kind in ("none", "not_charged"):  # unpaid, left on no screen: to charge or void
                kind, headline = "open", "VENTA ABIERTA"
        found.append(ParkedSale(id=sale.id, total=sale.total, kind=kind, headline=headline))
    return found


async def register_mode(web: Web, register_id: int) -> contingency.ContingencyState:
    """Normal or contingency mode, and the payment methods the register may offer now."""
    return await web.venue_call(contingency.register_state, register_id=register_id)


async def require_cart(web: Web, version: int | None = None) -> PosState:
    """Like ``require_session``, and the cart is editable: no sale of this browser is being charged. With
    ``version`` (the cart version the tab shows), a tab that shows an older cart is refused: another tab of
    this browser changed it, and the cashier must see the current one before acting on it."""
    state = await require_session(web)
    if state.sale_id is not None:
        raise SaleInProgress(state.sale_id)
    if version is not None and version != state.version:
        raise StaleCart()
    return state


class StaleCart(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "El pedido cambió en otra pestaña de este equipo. Revise el pedido actual antes de seguir.",
            code="pos.stale_cart",
        )


class SaleInProgress(Conflict):
    def __init__(self, sale_id: int) -> None:
        super().__init__(
            "Hay una venta en cobro: termínela o anúlela antes de modificar el carro.", code="pos.sale_in_progress"
        )
        self.sale_id = sale_id


async def require_session(web: Web) -> PosState:
    """The POS state of this browser, with an open session (else a clear Spanish refusal)."""
    state = pos_state(web)
    if state.session_id is None:
        raise Conflict(
            "No hay una caja abierta en este equipo. Elija una caja y abra su sesión.", code="pos.no_session"
        )
    return state


# ---- choose register and open ---------------------------------------------------------------------------
@get("/")
async def pos_home(web: NamedDependency[Web]) -> Template:
    return await web.page("pos/home.html", **await home_context(web))


@post("/session/resume")
async def resume_session(request: Request, data: Annotated[ResumeForm, FORM]) -> Response:
    web = Web(request)
    async with web.form("pos/home.html", lambda: home_context(web)):
        session = await web.venue_call(sessions.resume_session, register_id=data.register_id, user_id=web.user_id)
    return await start_pos(web, data.register_id, session.id)


# ---- handover: take over another cashier's drawer -------------------------------------------------------
async def takeover_context(web: Web, register_id: int) -> dict:
    session = await web.call(sessions.current_session, web.venue_id, register_id)
    if session is None:
        raise Conflict("Esa caja no tiene una sesión abierta.", code="session.none_open")
    return {
        "register": await web.call(registers.get_register, web.venue_id, register_id),
        "venue": await web.call(venues.get_venue, web.venue_id),
        "session": session,
        "holder": await web.call(users.get_user, web.venue_id, session.cashier_id),
        "needs_supervisor": await web.venue_call(permissions.rule_for, user_id=web.user_id, action=Action.TAKE_OVER)
        != "allow",
        "state": pos_state(web),
    }


@get("/session/relevo")
async def takeover_page(request: Request, register_id: FromQuery[int] = 0) -> Template:
    web = Web(request)
    return await web.page("pos/takeover.html", **await takeover_context(web, register_id))


@post("/session/relevo")
async def take_over(request: Request) -> Template:
    """The incoming cashier counts the drawer blind (with a supervisor's authorization when their role needs
    one); the difference belongs to the outgoing cashier; from now on this browser sells in it."""
    web = Web(request)
    raw = await form_dict(request)
    register_id = form_int(raw.get("register_id"))
    echoed = {k: v for k, v in raw.items() if k != "supervisor_code"}
    async with web.form("pos/takeover.html", lambda: takeover_context(web, register_id), form=echoed):
        session = await web.call(sessions.current_session, web.venue_id, register_id)
        if session is None:
            raise Conflict("Esa caja no tiene una sesión abierta.", code="session.none_open")
        grant = await web.authorize(Action.TAKE_OVER, raw.get("supervisor_code"), session_id=session.id)
        handover = await web.venue_call(
            sessions.take_over,
            session_id=session.id,
            user_id=web.user_id,
            counted=denomination_count(raw, "count_"),
            note=raw.get("note", ""),
            authorization_id=grant,
        )
    register = await web.call(registers.get_register, web.venue_id, register_id)
    carts.save(
        web.request, PosState(register_id=register_id, register_type=register.register_type, session_id=session.id)
    )
    return await web.page("pos/takeover_result.html", handover=handover, register=register, state=pos_state(web))


async def start_pos(web: Web, register_id: int, session_id: int) -> Response:
    """This browser now sells on ``register_id`` in ``session_id``; when the session has an unpaid sale left on
    its pay screen (a logout, an expired login), the cashier lands back on it, to charge or void it."""
    register = await web.call(registers.get_register, web.venue_id, register_id)
    state = PosState(register_id=register_id, register_type=register.register_type, session_id=session_id)
    state.sale_id = await web.call(waiting.open_sale, web.venue_id, session_id)
    carts.save(web.request, state)
    return web.redirect("/caja/venta")


@get("/session/open")
async def open_page(request: Request, register_id: FromQuery[int | None] = None) -> Template:
    web = Web(request)
    return await web.page("pos/open.html", **await open_context(web, register_id))


@post("/session/open")
async def open_session(request: Request) -> Response:
    web = Web(request)
    raw = await form_dict(request)
    register_id = form_int(raw.get("register_id"))
    async with web.form("pos/open.html", lambda: open_context(web, register_id), form=raw):
        session = await web.venue_call(
            sessions.open_session,
            register_id=register_id,
            user_id=web.user_id,
            initial_cash=raw.get("initial_cash", ""),
            open_key=raw.get("open_key", ""),
            count=denomination_count(raw, "count_") or None,
        )
    return await start_pos(web, register_id, session.id)


# ---- sale screen ----------------------------------------------------------------------------------------
@get("/venta")
async def sale_screen(web: NamedDependency[Web], otra: FromQuery[int] = 0) -> Response:
    state = pos_state(web)
    if state.session_id is None:
        return web.redirect("/caja/")
    if state.sale_id is not None:
        # A tab following another tab's cart change may arrive after that tab started charging: it still says why.
        return web.redirect(f"/caja/venta/{state.sale_id}" + ("?otra=1" if otra else ""))
    if state.last_sale_id is not None and not state.lines:  # the receipt stays until the next product
        return await payment_view(web, state.last_sale_id)
    return await web.page(
        "pos/sale.html",
        partial_template="pos/_cart.html",
        full_context=lambda: screen_context(web, state),
        state=state,
        stale=bool(otra),
    )


async def cart_response(web: Web, state: PosState) -> Template:
    carts.save(web.request, state)
    return await web.page(
        "pos/sale.html", partial_template="pos/_cart.html", full_context=lambda: screen_context(web, state), state=state
    )


@post("/venta/item")
async def add_item(web: NamedDependency[Web], data: Annotated[AddItem, FORM]) -> Template:
    """A product into the cart, with the modifiers ticked in its chooser (checked against the catalogue)."""
    state = await require_cart(web, data.v)
    product = await web.call(catalog.get_product, web.venue_id, data.product_id)
    chosen: list[catalog.ModifierOut] = []
    if data.modifier_ids or data.chooser:
        modifiers = await web.call(catalog.product_modifiers, web.venue_id, product.id)
        offered = {m.id: m for m in modifiers}
        async with web.form("pos/_cart.html", {"state": state}):
            if len(set(data.modifier_ids)) != len(data.modifier_ids) or any(
                m not in offered for m in data.modifier_ids
            ):
                raise ValidationFailed(
                    f"Ese modificador no existe o ya no se ofrece para {product.name}.", field="modifiers"
                )
        # A group left without its choice: the chooser again, with the message and what was ticked.
        async with web.form(
            "pos/_modifiers.html",
            {"state": state, "product": product, "modifiers": modifiers, "chosen_ids": data.modifier_ids},
        ):
            catalog.check_groups(product.name, modifiers, data.modifier_ids)
        chosen = [offered[m] for m in data.modifier_ids]
    state.add(
        Line(
            product_id=product.id,
            name=product.name,
            unit_price=product.price + sum(m.price_delta for m in chosen),
            quantity=max(1, min(data.quantity, carts.MAX_QUANTITY)),
            modifier_ids=[m.id for m in chosen],
            modifiers=[modifier_label(m) for m in chosen],
            priced_at=utcnow(),
        )
    )
    return await cart_response(web, state)


def modifier_label(m: catalog.ModifierOut) -> str:
    return carts.modifier_label(m.name, m.price_delta)


@get("/venta/item/{product_id:int}/modificadores")
async def modifier_chooser(web: NamedDependency[Web], product_id: FromPath[int]) -> Template:
    """The modifiers of a product that has some, to tick before it goes into the cart."""
    state = await require_cart(web)
    product = await web.call(catalog.get_product, web.venue_id, product_id)
    modifiers = await web.call(catalog.product_modifiers, web.venue_id, product_id)
    return await web.page(
        "pos/sale.html",
        partial_template="pos/_modifiers.html",
        panel="pos/_modifiers.html",
        full_context=lambda: screen_context(web, state),
        state=state,
        product=product,
        modifiers=modifiers,
    )


@post("/venta/libre")
async def add_free_line(web: NamedDependency[Web], data: Annotated[FreeLine, FORM]) -> Template:
    state = await require_cart(web, data.v)
    async with web.form("pos/_cart.html", {"state": state}, form=msgspec.to_builtins(data), free_open=True):
        amount = parse_amount(data.amount, field="amount", label="El monto libre")
        clean_reason(data.reason, "El motivo del monto libre", missing="Indique el motivo del monto libre.")
    state.add(
        Line(name=data.name.strip()[:120] or "Monto libre", unit_price=amount, free_reason=data.reason.strip()[:200])
    )
    return await cart_response(web, state)


@post("/venta/linea")
async def change_line(web: NamedDependency[Web], data: Annotated[LineChange, FORM]) -> Template:
    state = await require_cart(web, data.v)
    state.change_quantity(data.index, data.delta)
    return await cart_response(web, state)


@post("/venta/vaciar")
async def clear_cart(web: NamedDependency[Web], data: Annotated[CartForm, FORM]) -> Template:
    state = await require_cart(web, data.v)
    state.next_sale()
    return await cart_response(web, state)


@post("/venta/cobrar")
async def checkout(web: NamedDependency[Web], data: Annotated[CartForm, FORM]) -> Response:
    state = await require_session(web)
    if state.sale_id is None and data.v is not None and data.v != state.version:
        raise StaleCart()
    async with web.form("pos/_cart.html", {"state": state}):
        sale = await web.venue_call(
            sales.create_sale,
            session_id=state.session_id,
            cashier_id=web.user_id,
            items=state.items(),
            idempotency_key=state.sale_key,
        )
    carried = bool(state.carried_discounts or state.tip_share)
    notes, refill = await give_carried(web, state, sale) if carried else ([], {})
    state.sale_id = sale.id
    state.touch()
    carts.save(web.request, state)
    if refill:
        return await payment_view(web, sale.id, carried_notes=notes, form=refill, discount_open=True)
    # The sale as created in this unit is what the pay screen shows (read again only when discounts or a tip
    # were given back to it).
    return await payment_view(web, sale.id, None if carried else sale, carried_notes=notes)


class CourtesyForm(msgspec.Struct, kw_only=True):
    reason: str = ""


@post("/venta/cortesia")
async def courtesy(web: NamedDependency[Web], data: Annotated[CourtesyForm, FORM]) -> Response:
    """OFICINA: the cart leaves as a courtesy (no revenue), with its reason; no money changes hands."""
    state = await require_cart(web)
    async with web.form("pos/_cart.html", {"state": state}, form=msgspec.to_builtins(data), courtesy_open=True):
        sale = await web.venue_call(
            sales.create_sale,
            session_id=state.session_id,
            cashier_id=web.user_id,
            items=state.items(),
            idempotency_key=state.sale_key,
            no_revenue=True,
            courtesy_reason=data.reason,
        )
        await web.venue_call(sales.pay_cash, sale_id=sale.id, cash_received=None, user_id=web.user_id)
    web.after_commit(lambda: after_sale(web.request, sale.id, web.venue_id))
    state.sale_id = sale.id
    carts.save(web.request, state)
    return await payment_view(web, sale.id)


# ---- payment --------------------------------------------------------------------------------------------
async def sale_context(web: Web, sale_id: int, sale: Any = None) -> dict:
    """``sale``: the sale as this request just wrote and read it in its unit (not read again)."""
    if sale is None or web.unit is None:
        sale = await web.call(sales.get_sale, web.venue_id, sale_id)
    progress = await web.poll(sale_id, sale)
    ctx = {"sale": sale, "progress": progress, "state": pos_state(web)}
    if panel_template(ctx) == "pos/_pay.html":  # the payment choice offers only what the register's mode allows
        ctx["contingency"] = await register_mode(web, sale.register_id)
        controls = await web.call(permissions.get_controls, web.venue_id)
        ctx["discount_limit"] = controls.discount_limit
        ctx["tip_percent"] = controls.suggested_tip_percent
        ctx["suggested_tip"] = tips.suggested_tip(sale.total, controls.suggested_tip_percent)
    return ctx


def panel_template(ctx: dict) -> str:
    """Which panel shows this sale's state: the receipt, the payment being followed (in flight, in doubt, or
    charged on the backup phone), or the payment choice (also after a payment that provably did not charge:
    cash, the card again, the backup or the void are all a tap away)."""
    sale, progress = ctx["sale"], ctx["progress"]
    if sale.status == "paid":
        return "pos/_receipt.html"
    if sale.status == "cancelled":
        return "pos/_cancelled.html"
    following = progress is not None and (
        progress.in_doubt or progress.manual is not None or any(a.active for a in progress.attempts)
    )
    return "pos/_progress.html" if following else "pos/_pay.html"


def pay_panel(ctx: dict) -> str:
    """The payment choice shown again with why a tap on it was refused; a sale that ended meanwhile (paid or voided
    from another tab or device, or by the session's close) shows as it is now, its receipt or its void, not a
    choice of payments the server no longer takes."""
    return panel_template(ctx) if ctx["sale"].status in ("paid", "cancelled") else "pos/_pay.html"


async def payment_view(web: Web, sale_id: int, sale: Any = None, **extra) -> Template:
    ctx = await sale_context(web, sale_id, sale) | extra
    state = ctx["state"]
    if state.sale_id == sale_id and ctx["sale"].status in ("paid", "cancelled"):
        # The sale is over: the register moves on. Its receipt stays on screen until the next product is
        # tapped, which starts the next sale (no extra tap).
        state.next_sale(finished=sale_id)
        carts.save(web.request, state)
    elif ctx["sale"].parked and ctx["sale"].status in ("paid", "cancelled"):
        # A sale left waiting has ended and the cashier now sees how: it leaves the list (on every device). A
        # page that only reads writes this in a transaction of its own.
        if web.unit is not None and web.unit.read_only:
            await web.apart(waiting.seen_ended, venue_id=web.venue_id, sale_id=sale_id, user_id=web.user_id)
        else:
            await web.venue_call(waiting.seen_ended, sale_id=sale_id, user_id=web.user_id)
    return await web.page(
        "pos/sale.html",
        partial_template=panel_template(ctx),
        panel=panel_template(ctx),
        full_context=lambda: screen_context(web, state, ctx["sale"]),
        **ctx,
    )


@get("/venta/{sale_id:int}")
async def sale_page(web: NamedDependency[Web], sale_id: FromPath[int], otra: FromQuery[int] = 0) -> Template:
    """The sale's current payment; ``otra``: a tab that showed something else follows it here (another tab of
    this browser started or moved on with the payment) and says so."""
    return await payment_view(web, sale_id, stale=bool(otra))


@get("/venta/{sale_id:int}/pago")
async def payment_progress(web: NamedDependency[Web], sale_id: FromPath[int]) -> Template:
    """The payment being followed, refreshed every second by its panel. While it is still followed (in flight,
    in doubt, on the backup phone) the panel shows the sale's total, not its lines: the sale and its payment are
    read in one statement, outside the request's unit (which then never opens). Any other answer (paid, voided,
    the payment choice again) is the whole payment view."""
    followed = await web.follow(sale_id) if web.htmx else None
    if followed is not None:
        sale, progress = followed
        ctx = {"sale": sale, "progress": progress, "state": pos_state(web)}
        if panel_template(ctx) == "pos/_progress.html":
            return await web.page(
                "pos/sale.html", panel="pos/_progress.html", partial_template="pos/_progress.html", **ctx
            )
    return await payment_view(web, sale_id)


@post("/venta/{sale_id:int}/efectivo")
async def pay_cash(web: NamedDependency[Web], sale_id: FromPath[int], data: Annotated[CashForm, FORM]) -> Template:
    """Paid, and the receipt read, in one transaction (the request's unit): a refusal leaves nothing behind."""
    async with web.form(pay_panel, lambda: sale_context(web, sale_id), form=msgspec.to_builtins(data)):
        paid = await web.venue_call(
            sales.pay_cash, sale_id=sale_id, cash_received=data.cash_received, user_id=web.user_id
        )
    web.after_commit(lambda: after_sale(web.request, sale_id, web.venue_id))
    return await payment_view(web, sale_id, paid)


@post("/venta/{sale_id:int}/efectivo-parcial")
async def pay_cash_part(
    web: NamedDependency[Web], sale_id: FromPath[int], data: Annotated[CashPartForm, FORM]
) -> Template:
    """A split payment: part in cash now, the rest by card, the backup or cash."""
    async with web.form(
        "pos/_pay.html", lambda: sale_context(web, sale_id), form=msgspec.to_builtins(data), split_open=True
    ):
        await web.venue_call(
            sales.pay_cash_part,
            sale_id=sale_id,
            amount=data.cash_part,
            user_id=web.user_id,
            paid_before=form_int(data.paid) if data.paid.strip() else None,
        )
    return await payment_view(web, sale_id)


async def require_holder_of(web: Web, sale_id: int) -> None:
    """A sale's card and backup payments are its drawer holder's, like its cash, voids, tips and discounts:
    another cashier (another register's, or the one before a handover) is refused before anything is sent."""
    await web.venue_call(permissions.require, action=Action.SELL, actor_id=web.user_id, sale_id=sale_id)


@post("/venta/{sale_id:int}/tarjeta")
async def pay_card(request: Request, sale_id: FromPath[int]) -> Template:
    web = Web(request)
    async with web.form(pay_panel, lambda: sale_context(web, sale_id)):
        await require_holder_of(web, sale_id)
        await web.orchestrator.start_payment(venue_id=web.venue_id, sale_id=sale_id, user_id=web.user_id)
    return await payment_view(web, sale_id)


@post("/venta/{sale_id:int}/cancelar-pago")
async def cancel_payment(request: Request, sale_id: FromPath[int]) -> Template:
    web = Web(request)
    async with web.form("pos/_progress.html", lambda: sale_context(web, sale_id)):
        await require_holder_of(web, sale_id)
        await web.orchestrator.cancel(venue_id=web.venue_id, sale_id=sale_id, user_id=web.user_id)
    return await payment_view(web, sale_id)


class DiscountForm(msgspec.Struct, kw_only=True):
    line: str = ""  # the line's number on the sale; empty: the whole sale
    kind: str = "percent"
    value: str = ""
    reason: str = ""
    supervisor_code: str = ""


@post("/venta/{sale_id:int}/descuento")
async def add_discount(
    web: NamedDependency[Web], sale_id: FromPath[int], data: Annotated[DiscountForm, FORM]
) -> Template:
    """A discount on a line or on the whole sale, with its reason; above the venue's limit a supervisor types
    their PIN or passes their badge on this screen."""
    async with web.form(pay_panel, lambda: sale_context(web, sale_id), form=echo(data), discount_open=True):
        grant = await web.authorize(Action.DISCOUNT, data.supervisor_code, sale_id=sale_id)
        await web.venue_call(
            discounts.apply_discount,
            sale_id=sale_id,
            user_id=web.user_id,
            kind=data.kind,
            value=data.value,
            reason=data.reason,
            line=form_int(data.line) if (data.line or "").strip() else None,  # a bad number is no line, not the sale
            authorization_id=grant,
        )
    return await payment_view(web, sale_id)


class TipForm(msgspec.Struct, kw_only=True):
    tip: str = ""


@post("/venta/{sale_id:int}/propina")
async def set_tip(web: NamedDependency[Web], sale_id: FromPath[int], data: Annotated[TipForm, FORM]) -> Template:
    """The sale's tip (the suggested one in one tap, another amount, or $0), before it is paid."""
    async with web.form(
        "pos/_pay.html", lambda: sale_context(web, sale_id), form=msgspec.to_builtins(data), tip_open=True
    ):
        await web.venue_call(tips.set_tip, sale_id=sale_id, user_id=web.user_id, amount=data.tip)
    return await payment_view(web, sale_id)


class DiscountRemoval(msgspec.Struct, kw_only=True):
    discount_id: int = 0


@post("/venta/{sale_id:int}/descuento/quitar")
async def remove_discount(
    web: NamedDependency[Web], sale_id: FromPath[int], data: Annotated[DiscountRemoval, FORM]
) -> Template:
    async with web.form(pay_panel, lambda: sale_context(web, sale_id)):
        await web.venue_call(
            discounts.remove_discount, sale_id=sale_id, discount_id=data.discount_id, user_id=web.user_id
        )
    return await payment_view(web, sale_id)


class BackupForm(msgspec.Struct, kw_only=True):
    supervisor_code: str = ""


@post("/venta/{sale_id:int}/respaldo")
async def start_backup(request: Request, sale_id: FromPath[int], data: Annotated[BackupForm, FORM]) -> Template:
    """Charge on the backup. When the register's policy asks for a supervisor, one types their credentials."""
    web = Web(request)
    async with web.form(pay_panel, lambda: sale_context(web, sale_id)):
        await require_holder_of(web, sale_id)
        user_id = web.user_id
        if data.supervisor_code:
            user_id = await supervisor_for(web, Action.USE_BACKUP, data.supervisor_code, sale_id=sale_id)
        await web.orchestrator.start_backup(venue_id=web.venue_id, sale_id=sale_id, user_id=user_id)
    return await payment_view(web, sale_id)


class ManualConfirm(msgspec.Struct, kw_only=True):
    attempt_id: int = 0
    authorization_code: str = ""
    last4: str = ""
    brand: str = ""
    card_type: str = ""


@post("/venta/{sale_id:int}/respaldo/confirmar")
async def confirm_backup(request: Request, sale_id: FromPath[int], data: Annotated[ManualConfirm, FORM]) -> Template:
    web = Web(request)
    async with web.form("pos/_progress.html", lambda: sale_context(web, sale_id), form=msgspec.to_builtins(data)):
        await require_holder_of(web, sale_id)
        await web.orchestrator.confirm_manual(
            venue_id=web.venue_id,
            attempt_id=data.attempt_id,
            authorization_code=data.authorization_code,
            last4=data.last4,
            brand=data.brand,
            card_type=data.card_type,
            user_id=web.user_id,
            sale_id=sale_id,
        )
    return await payment_view(web, sale_id)


@post("/venta/{sale_id:int}/forzar-respaldo")
async def override_backup(request: Request, sale_id: FromPath[int], data: Annotated[ApproveForm, FORM]) -> Template:
    web = Web(request)
    async with web.form("pos/_progress.html", lambda: sale_context(web, sale_id), override_open=True):
        await require_holder_of(web, sale_id)
        supervisor_id = await supervisor_for(web, Action.FORCE_BACKUP, data.supervisor_code, sale_id=sale_id)
        await web.orchestrator.override_to_backup(
            venue_id=web.venue_id, sale_id=sale_id, supervisor_id=supervisor_id, note=data.note
        )
    return await payment_view(web, sale_id)


class RefundForm(msgspec.Struct, kw_only=True):
    attempt_id: int = 0
    supervisor_code: str = ""


@post("/venta/{sale_id:int}/devolver")
async def refund_duplicate(request: Request, sale_id: FromPath[int], data: Annotated[RefundForm, FORM]) -> Template:
    web = Web(request)
    async with web.form("pos/_receipt.html", lambda: sale_context(web, sale_id)):
        supervisor_id = await supervisor_for(web, Action.REFUND, data.supervisor_code, sale_id=sale_id)
        await web.orchestrator.refund_attempt(web.venue_id, data.attempt_id, supervisor_id, sale_id=sale_id)
    return await payment_view(web, sale_id)


@post("/venta/{sale_id:int}/esperar")
async def park_sale(request: Request, sale_id: FromPath[int]) -> Response:
    """The card payment is in doubt: the sale waits in "ventas en espera" (it goes on being reconciled) and the
    register serves the next customer. Nothing about the payment changes, and the terminal stays locked until
    the doubt is resolved."""
    web = Web(request)
    state = await require_session(web)
    async with web.form("pos/_progress.html", lambda: sale_context(web, sale_id)):
        sale = await web.call(sales.get_sale, web.venue_id, sale_id)
        progress = await web.poll(sale_id)
        if state.sale_id != sale_id or sale.status != "pending_payment" or outcome(progress).kind != "in_doubt":
            raise Conflict("Solo una venta con el cobro en duda puede quedar en espera.", code="pos.park_not_in_doubt")
        await web.venue_call(waiting.park_sale, sale_id=sale_id, user_id=web.user_id)
    state.next_sale()
    carts.save(request, state)
    return web.redirect("/caja/venta")


@post("/venta/{sale_id:int}/volver")
async def back_to_cart(web: NamedDependency[Web], sale_id: FromPath[int]) -> Response:
    """Back from the pay screen to the order, while no payment is in flight or in doubt: the unpaid sale is
    voided ("pedido modificado") and its items are the cart again, to change and charge anew."""
    state = await require_session(web)
    async with web.form(pay_panel, lambda: sale_context(web, sale_id)):
        if state.sale_id != sale_id:
            raise Conflict("Esa venta no es la que se está cobrando en este equipo.", code="pos.not_current_sale")
        sale = await web.call(sales.get_sale, web.venue_id, sale_id)
        if sale.cash_part:
            raise Conflict(
                "Ya se recibió una parte en efectivo: cobre el resto, o anule la venta y devuelva ese efectivo.",
                code="pos.cash_part_taken",
            )
        await web.venue_call(
            sales.cancel_sale, sale_id=sale_id, user_id=web.user_id, reason="Pedido modificado antes de pagar"
        )
    if not state.lines:  # a sale the cashier came back to after a logout: its cart is the sale's lines
        state.lines_from(sale)
    state.reopen_cart()
    # What the cashier gave on the pay screen is given again when the changed order is charged.
    carried = []
    for d in sale.discounts:
        line = state.lines[d.line - 1] if d.line is not None and 0 < d.line <= len(state.lines) else None
        if d.line is not None and line is None:
            continue
        carried.append(
            carts.CarriedDiscount(
                line_key=line.key if line else None,
                line_name=line.name if line else "",
                kind=d.kind,
                value=d.value,
                reason=d.reason,
            )
        )
    state.carry(carried, sale.tip, sale.total)
    return await cart_response(web, state)


async def in_savepoint(web: Web, fn: Any, **kwargs: Any) -> Any:
    """``fn`` in the request's unit, undone alone if it is refused (the sale it works on stays)."""
    if web.unit is None:
        return await web.venue_call(fn, **kwargs)
    s = await web.unit.session()
    async with s.begin_nested():
        return await fn(s, venue_id=web.venue_id, **kwargs)


async def give_carried(web: Web, state: PosState, sale: sales.SaleOut) -> tuple[list[str], dict]:
    """The discounts and tip carried from the pay screen ("Editar pedido"), given to the new sale: a line's
    discount while its line is still there, the sale's, then the tip as the same share of the new total. One
    that no longer fits (over the limit without a supervisor, more than the line now…) is said, not given; the
    first one needing a supervisor comes back filled in on the discount form."""
    notes: list[str] = []
    refill: dict = {}
    keys = [line.key for line in state.lines]
    for d in state.carried:
        number = keys.index(d.line_key) + 1 if d.line_key is not None else None
        try:
            await in_savepoint(
                web,
                discounts.apply_discount,
                sale_id=sale.id,
                user_id=web.user_id,
                kind=d.kind,
                value=d.value,
                reason=d.reason,
                line=number,
            )
        except permissions.SupervisorRequired:
            notes.append(f"{d.label}: necesita otra vez la autorización de un supervisor.")
            refill = refill or {"line": str(number or ""), "kind": d.kind, "value": str(d.value), "reason": d.reason}
        except (ValidationFailed, Conflict) as refused:
            notes.append(f"{d.label}: no se volvió a aplicar ({refused.message})")
    if state.tip_share and state.tip_base:
        now = await web.call(sales.get_sale, web.venue_id, sale.id)
        tip = (now.total * state.tip_share * 2 + state.tip_base) // (2 * state.tip_base)  # same share, ½ up
        try:
            await in_savepoint(web, tips.set_tip, sale_id=sale.id, user_id=web.user_id, amount=str(tip))
        except (ValidationFailed, Conflict) as refused:
            notes.append(f"Propina: no se volvió a aplicar ({refused.message})")
    state.drop_carried()
    return notes, refill


@post("/venta/{sale_id:int}/anular")
async def cancel_sale(web: NamedDependency[Web], sale_id: FromPath[int], data: Annotated[CancelForm, FORM]) -> Response:
    template = "pos/_receipt.html" if data.panel == "receipt" else "pos/_pay.html"
    async with web.form(template, lambda: sale_context(web, sale_id), form=echo(data), cancel_open=True):
        grant = await web.authorize(Action.VOID_PAID, data.supervisor_code, sale_id=sale_id)
        cancelled = await web.venue_call(
            sales.cancel_sale, sale_id=sale_id, user_id=web.user_id, reason=data.reason, authorization_id=grant
        )
    if cancelled.cash_part and cancelled.paid_at is None:  # the cash part goes back: the panel says how much
        return await payment_view(web, sale_id)
    return start_next_sale(web, sale_id)


def start_next_sale(web: Web, sale_id: int | None = None) -> Response:
    """An empty cart, unless the cashier already started the next one (a void from an old receipt)."""
    state = pos_state(web)
    if sale_id is None or state.sale_id == sale_id or not state.lines:
        state.next_sale()
        carts.save(web.request, state)
    return web.redirect("/caja/venta")


@post("/venta/siguiente")
async def next_sale(request: Request) -> Response:
    return start_next_sale(Web(request))


# ---- what the screen must follow: the session, the register, the other tabs ----------------------------------
@get("/estado")
async def screen_status(
    web: NamedDependency[Web],
    v: FromQuery[int | None] = None,
    sale: FromQuery[int | None] = None,
    dispositivo: FromQuery[str | None] = None,
    pendientes: FromQuery[int | None] = None,
) -> Template:
    """Polled by the sale screen with what it shows (the cart version, the sale): a session closed or taken
    over elsewhere, a suspended register, a terminal in breaker, or another tab's change show within one poll.
    When the screen is behind this browser's state (another tab changed the cart or started charging it), the
    panel is reloaded with the current one. It also carries how many sales taken offline this device still holds
    (``dispositivo``, ``pendientes``): the session's close waits for them."""
    state = pos_state(web)
    await offline.report_device_queue(web, state.register_id, dispositivo, pendientes)
    status, follow = None, None
    parked = await parked_sales(web, state)
    if state.session_id is not None:
        status = await web.venue_call(
            screens.screen_status,
            session_id=state.session_id,
            user_id=web.user_id,
            timezone=web.viewer.timezone if web.viewer else None,
        )
        if state.sale_id is not None and sale != state.sale_id and sale not in {w.id for w in parked}:
            follow = f"/caja/venta/{state.sale_id}?otra=1"
        elif state.sale_id is None and v is not None and v != state.version:
            follow = "/caja/venta?otra=1"
    return await web.page("pos/_status.html", partial=True, status=status, follow=follow, parked=parked)


# ---- cash movements and incidents -------------------------------------------------------------------------
async def movements_context(web: Web) -> dict:
    state = await require_session(web)
    return {
        "state": state,
        "movements": await web.call(sessions.list_cash_movements, web.venue_id, state.session_id),
        "controls": await web.call(permissions.get_controls, web.venue_id),
        "needs_supervisor_out": web.viewer is not None and web.viewer.role == "cashier",
    }


@get("/movimientos")
async def movements_page(web: NamedDependency[Web]) -> Template:
    return await web.page("pos/movements.html", **await movements_context(web))


@post("/movimientos")
async def add_movement(request: Request, data: Annotated[MovementForm, FORM]) -> Response:
    web = Web(request)
    state = await require_session(web)
    assert state.session_id is not None  # require_session refuses a browser without an open session
    async with web.form("pos/movements.html", lambda: movements_context(web), form=echo(data)):
        grant = None
        if data.supervisor_code:
            action = Action.CASH_OUT if data.kind == "out" else Action.CASH_IN
            amount = parse_amount(data.amount, field="amount")
            grant = await web.authorize(action, data.supervisor_code, session_id=state.session_id, amount=amount)
        await web.venue_call(
            sessions.add_cash_movement,
            session_id=state.session_id,
            kind=data.kind,
            amount=data.amount,
            reason=data.reason,
            user_id=web.user_id,
            authorization_id=grant,
        )
    after_movement(request, state.session_id, web.venue_id, web.user_id)
    return web.redirect("/caja/movimientos?ok=1")


async def incidents_context(web: Web) -> dict:
    state = await require_session(web)
    return {
        "state": state,
        "kinds": INCIDENT_KINDS,
        "incidents": await web.call(audit.list_incidents, web.venue_id, session_id=state.session_id),
    }


@get("/incidentes")
async def incidents_page(web: NamedDependency[Web]) -> Template:
    return await web.page("pos/incidents.html", **await incidents_context(web))


@post("/incidentes")
async def add_incident(request: Request, data: Annotated[IncidentForm, FORM]) -> Response:
    web = Web(request)
    state = await require_session(web)
    async with web.form("pos/incidents.html", lambda: incidents_context(web), form=msgspec.to_builtins(data)):
        if data.kind not in INCIDENT_KINDS or len(data.description.strip()) < 5:
            raise ValidationFailed(
                "Elija el tipo y describa la incidencia (mínimo 5 caracteres).",
                fields={"kind": "Elija un tipo."}
                if data.kind not in INCIDENT_KINDS
                else {"description": "Describa la incidencia (mínimo 5 caracteres)."},
            )
        await web.venue_call(
            audit.open_incident,
            kind=data.kind,
            description=data.description.strip(),
            session_id=state.session_id,
            register_id=state.register_id,
            user_id=web.user_id,
        )
    return web.redirect("/caja/incidentes?ok=1")


# ---- blind close ----------------------------------------------------------------------------------------
async def close_context(web: Web) -> dict:
    state = await require_session(web)
    return {
        "state": state,
        "venue": await web.call(venues.get_venue, web.venue_id),
        "session": await web.call(sessions.get_session, web.venue_id, state.session_id),
    }


@get("/session/close")
async def close_page(web: NamedDependency[Web]) -> Template:
    return await web.page("pos/close.html", **await close_context(web))


@post("/session/close")
async def close_session(request: Request) -> Template:
    web = Web(request)
    state = await require_session(web)
    raw = await form_dict(request)
    async with web.form("pos/close.html", lambda: close_context(web), form=raw):
        without_offline = str(raw.get("without_offline_reason", "") or "")
        grant = None
        if without_offline.strip():  # "cerrar sin esas ventas": a device that reports unsynced sales is not coming back
            grant = await web.authorize(
                Action.CLOSE_WITHOUT_OFFLINE, raw.get("supervisor_code"), session_id=state.session_id
            )
        result = await web.venue_call(
            sessions.close_session,
            session_id=state.session_id,
            user_id=web.user_id,
            counted=denomination_count(raw, "count_"),
            note=raw.get("note", ""),
            without_offline_reason=without_offline,
            authorization_id=grant,
        )
    if result.status == "closed":
        carts.save(request, PosState())
    return await web.page("pos/close_result.html", result=result, state=state)


@post("/session/close/aprobar")
async def approve_close(request: Request, data: Annotated[ApproveForm, FORM]) -> Template:
    web = Web(request)
    state = await require_session(web)
    pending = await web.call(sessions.pending_close, web.venue_id, state.session_id)
    async with web.form("pos/close_result.html", {"state": state, "result": pending}, form={"note": data.note}):
        grant = await web.authorize(Action.APPROVE_DIFFERENCE, data.supervisor_code, session_id=state.session_id)
        result = await web.venue_call(
            sessions.approve_close,
            session_id=state.session_id,
            user_id=web.user_id,
            note=data.note,
            authorization_id=grant,
        )
    carts.save(request, PosState())
    return await web.page("pos/close_result.html", result=result, state=state)


def show_sale_in_progress(request: Request, exc: SaleInProgress) -> Response:
    """A cart action while a sale is being charged: back to that sale's screen, nothing changes."""
    return Web(request).redirect(f"/caja/venta/{exc.sale_id}")


def show_current_cart(request: Request, exc: StaleCart) -> Response:
    """A tab acted on a cart it no longer shows: nothing changes, and it is shown the current cart."""
    web = Web(request)
    state = pos_state(web)
    if not web.htmx:
        return web.redirect("/caja/venta")
    return web.error_page("pos/_cart.html", status_code=409, state=state, error=exc.message, stale=True)


router = Router(
    path="/caja",
    guards=[requires(*CASHIER)],
    include_in_schema=False,
    exception_handlers={SaleInProgress: show_sale_in_progress, StaleCart: show_current_cart},
    route_handlers=[
        pos_home,
        resume_session,
        takeover_page,
        take_over,
        open_page,
        open_session,
        sale_screen,
        add_item,
        modifier_chooser,
        add_free_line,
        change_line,
        clear_cart,
        checkout,
        courtesy,
        sale_page,
        payment_progress,
        pay_cash,
        pay_cash_part,
        pay_card,
        add_discount,
        remove_discount,
        set_tip,
        cancel_payment,
        start_backup,
        confirm_backup,
        override_backup,
        refund_duplicate,
        park_sale,
        back_to_cart,
        cancel_sale,
        next_sale,
        screen_status,
        movements_page,
        add_movement,
        incidents_page,
        add_incident,
        close_page,
        close_session,
        approve_close,
    ],
)
