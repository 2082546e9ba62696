"""The cart being built at the POS, kept in the server-side web session (so a reload keeps it).

A product line keeps when it was added: the sale, computed by the server from the catalogue when it is
created, charges each line the price the catalogue had then (the price the cart shows), not one an admin set
meanwhile.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from caja_core.money import format_clp
from caja_core.sales.service import ItemInput

MAX_QUANTITY = 99


class Line(msgspec.Struct, kw_only=True):
    product_id: int | None = None
    name: str
    unit_price: int
    quantity: int = 1
    free_reason: str = ""
    #: The modifiers chosen when the product was tapped (ids, and "Doble +$1.000" to show); unit_price includes
    #: their prices. The sale prices them again from the catalogue.
    modifier_ids: list[int] = msgspec.field(default_factory=list)
    modifiers: list[str] = msgspec.field(default_factory=list)
    #: When the product line was added (UTC): the sale charges the catalogue's price of that instant.
    priced_at: datetime | None = None

    @property
    def total(self) -> int:
        return self.unit_price * self.quantity

    @property
    def key(self) -> str:
        """What makes two lines the same line: the product, its modifiers and its price (the same product tapped
        after a price change is a line of its own, at the new price), or a free line's text and amount."""
        if self.product_id is not None:
            return f"p{self.product_id}:{','.join(map(str, self.modifier_ids))}@{self.unit_price}"
        return f"f{self.name}|{self.unit_price}|{self.free_reason}"


def modifier_label(name: str, price: int) -> str:
    """A modifier as the cart shows it: "Doble +$1.000", or its name alone when it adds nothing."""
    return f"{name} +{format_clp(price)}" if price else name


class CarriedDiscount(msgspec.Struct, kw_only=True):
    """A discount of a sale taken back to the cart ("Editar pedido"), to give again when it is charged anew."""

    line_key: str | None = None  # the line's Line.key; None: the whole sale
    line_name: str = ""
    kind: str  # percent / amount
    value: int
    reason: str

    @property
    def label(self) -> str:
        what = f"{self.value} %" if self.kind == "percent" else f"${self.value:,}".replace(",", ".")
        return f"Descuento {what} · {self.reason}" + (f" ({self.line_name})" if self.line_name else "")


class PosState(msgspec.Struct, kw_only=True):
    """What this browser session is doing at the POS."""

    register_id: int | None = None
    register_type: str = ""
    session_id: int | None = None
    lines: list[Line] = msgspec.field(default_factory=list)
    sale_key: str = msgspec.field(default_factory=lambda: uuid.uuid4().hex)
    sale_id: int | None = None
    open_key: str = msgspec.field(default_factory=lambda: uuid.uuid4().hex)
    #: Bumped by every change of the cart or of the sale this browser follows: a tab that shows an older
    #: version is refused and shown the current cart (two tabs of one browser share this state).
    version: int = 0
    #: The sale just finished (paid or voided): its receipt stays on screen until the next product is tapped.
    last_sale_id: int | None = None
    #: Back from the pay screen ("Editar pedido"): the discounts and the tip of the sale given up, given again
    #: when the changed order is charged (a line's discount only while that line is still in the cart; the tip
    #: as the same share of the new total: tip_share / tip_base).
    carried_discounts: list[CarriedDiscount] = msgspec.field(default_factory=list)
    tip_share: int = 0
    tip_base: int = 0

    def carry(self, discounts: list[CarriedDiscount], tip: int, total: int) -> None:
        self.carried_discounts = discounts
        self.tip_share, self.tip_base = (tip, total) if tip and total > 0 else (0, 0)

    def drop_carried(self) -> None:
        self.carried_discounts = []
        self.tip_share = self.tip_base = 0

    @property
    def carried(self) -> list[CarriedDiscount]:
        """The carried discounts that still apply: the sale's, and those of lines still in the cart."""
        keys = {line.key for line in self.lines}
        return [d for d in self.carried_discounts if d.line_key is None or d.line_key in keys]

    @property
    def tip_percent_carried(self) -> int:
        return round(self.tip_share * 100 / self.tip_base) if self.tip_base else 0

    def touch(self) -> None:
        self.version += 1

    @property
    def total(self) -> int:
        return sum(line.total for line in self.lines)

    @property
    def count(self) -> int:
        return sum(line.quantity for line in self.lines)

    def add(self, line: Line) -> None:
        self.touch()
        self.last_sale_id = None
        for existing in self.lines:
            if line.product_id is not None and existing.key == line.key:
                existing.quantity = min(MAX_QUANTITY, existing.quantity + line.quantity)
                return
        self.lines.append(line)

    def change_quantity(self, index: int, delta: int) -> None:
        self.touch()
        if 0 <= index < len(self.lines):
            line = self.lines[index]
            line.quantity = min(MAX_QUANTITY, line.quantity + delta)
            if line.quantity <= 0:
                del self.lines[index]

    def items(self) -> list[ItemInput]:
        return [
            ItemInput(
                product_id=ln.product_id,
                quantity=ln.quantity,
                name=None if ln.product_id else ln.name,
                unit_price=None if ln.product_id else ln.unit_price,
                free_reason=ln.free_reason,
                modifier_ids=list(ln.modifier_ids),
                priced_at=ln.priced_at if ln.product_id else None,
                seen_price=ln.unit_price if ln.product_id else None,
            )
            for ln in self.lines
        ]

    def lines_from(self, sale: Any) -> None:
        """The cart of a sale this browser no longer holds (the cashier came back to it after a logout or an
        expired login): its lines as the sale recorded them, each product line priced as of the sale's creation
        (the price it was charged at)."""
        self.lines = [
            Line(
                product_id=item.product_id,
                name=item.name,
                unit_price=item.unit_price,
                quantity=item.quantity,
                free_reason=item.free_reason,
                modifier_ids=[m.id for m in item.modifiers if m.id is not None],
                modifiers=[modifier_label(m.name, m.price) for m in item.modifiers],
                priced_at=sale.created_at if item.product_id is not None else None,
            )
            for item in sale.items
        ]

    def reopen_cart(self) -> None:
        """The sale being charged was given up before any payment: its lines are the cart again, and charging
        it creates a new sale."""
        self.touch()
        self.sale_id = None
        self.sale_key = uuid.uuid4().hex

    def next_sale(self, finished: int | None = None) -> None:
        """Start an empty cart; ``finished`` is the sale whose receipt stays on screen meanwhile."""
        self.touch()
        self.lines = []
        self.sale_id = None
        self.sale_key = uuid.uuid4().hex
        self.last_sale_id = finished
        self.drop_carried()


def load(session: dict[str, Any]) -> PosState:
    raw = session.get("pos") if isinstance(session, dict) else None
    try:
        return msgspec.convert(raw, PosState) if raw else PosState()
    except msgspec.ValidationError:
        return PosState()


def save(request, state: PosState) -> None:
    data = dict(request.session or {})
    data["pos"] = msgspec.to_builtins(state)
    request.set_session(data)
