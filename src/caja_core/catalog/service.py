"""Product catalogue: categories and products per venue; registers can limit categories."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

import msgspec
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.service import record
from ..clock import utcnow
from ..db.lookup import get_in_venue
from ..errors import Conflict, NotFound, ValidationFailed
from ..money import parse_amount
from ..registers.models import CashRegister
from .models import Category, Modifier, Product, ProductPrice


class CategoryOut(msgspec.Struct, kw_only=True):
    id: int
    name: str
    sort_order: int
    active: bool


class ProductOut(msgspec.Struct, kw_only=True):
    id: int
    category_id: int
    name: str
    price: int
    active: bool
    sort_order: int
    shortcut: str | None = None


def _cat_out(c: Category) -> CategoryOut:
    return CategoryOut(id=c.id, name=c.name, sort_order=c.sort_order, active=c.active)


def _prod_out(p: Product) -> ProductOut:
    return ProductOut(
        id=p.id,
        category_id=p.category_id,
        name=p.name,
        price=p.price,
        active=p.active,
        sort_order=p.sort_order,
        shortcut=p.shortcut,
    )


def search_text(*parts: str) -> str:
    """What the POS's product search matches against: lower case, accents and ñ's tilde dropped, one space
    between words ("Jägermeister", "Piña colada" → "jagermeister", "pina colada"). The POS normalises what
    the cashier types the same way, so "pina" finds "Piña" and "JAGER" finds "Jägermeister"."""
    decomposed = unicodedata.normalize("NFD", " ".join(parts))
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(plain.lower().split())


def _name(value: str, field: str = "name", label: str = "El nombre") -> str:
    value = (value or "").strip()
    if not value or len(value) > 120:
        raise ValidationFailed(f"{label} es obligatorio (máximo 120 caracteres).", field=field)
    if any(ord(ch) < 32 for ch in value):
        raise ValidationFailed(f"{label} no puede tener caracteres de control.", field=field)
    return value


async def create_category(
    s: AsyncSession, *, venue_id: int, name: str, sort_order: int = 0, actor_id: int | None = None
) -> CategoryOut:
    name = _name(name)
    if await s.scalar(select(Category.id).where(Category.venue_id == venue_id, Category.name == name)):
        raise Conflict(f"La categoría {name!r} ya existe.", code="category.exists", field="name")
    cat = Category(venue_id=venue_id, name=name, sort_order=sort_order, active=True)
    s.add(cat)
    await s.flush()
    await record(
        s,
        venue_id=venue_id,
        user_id=actor_id,
        action="category.created",
        entity="category",
        entity_id=cat.id,
        payload={"name": name},
    )
    return _cat_out(cat)


async def _category(s: AsyncSession, venue_id: int, category_id: int) -> Category:
    return await get_in_venue(
        s, Category, category_id, venue_id, "La categoría no existe.", "category.not_found", field="category_id"
    )


async def update_category(
    s: AsyncSession,
    *,
    venue_id: int,
    category_id: int,
    name: str | None = None,
    sort_order: int | None = None,
    active: bool | None = None,
    actor_id: int | None = None,
) -> CategoryOut:
    cat = await _category(s, venue_id, category_id)
    if name is not None:
        cat.name = _name(name)
    if sort_order is not None:
        cat.sort_order = sort_order
    if active is not None:
        cat.active = active
    await record(s, venue_id=venue_id, user_id=actor_id, action="category.updated", entity="category", entity_id=cat.id)
    return _cat_out(cat)


async def list_categories(s: AsyncSession, venue_id: int, *, active_only: bool = False) -> list[CategoryOut]:
    q = select(Category).where(Category.venue_id == venue_id)
    if active_only:
        q = q.where(Category.active.is_(True))
    return [_cat_out(c) for c in await s.scalars(q.order_by(Category.sort_order, Category.name))]


async def create_product(
    s: AsyncSession,
    *,
    venue_id: int,
    category_id: int,
    name: str,
    price: object,
    sort_order: int = 0,
    shortcut: str | None = None,
    actor_id: int | None = None,
) -> ProductOut:
    await _category(s, venue_id, category_id)
    product = Product(
        venue_id=venue_id,
        category_id=category_id,
        name=_name(name),
        price=parse_amount(price, field="price", label="El precio"),
        active=True,
        sort_order=sort_order,
        shortcut=(shortcut or None),
    )
    s.add(product)
    await s.flush()
    await record(
        s,
        venue_id=venue_id,
        user_id=actor_id,
        action="product.created",
        entity="product",
        entity_id=product.id,
        payload={"name": product.name, "price": product.price},
    )
    return _prod_out(product)


async def get_product(s: AsyncSession, venue_id: int, product_id: int) -> ProductOut:
    return _prod_out(
        await get_in_venue(s, Product, product_id, venue_id, "El producto no existe.", "product.not_found")
    )


async def update_product(
    s: AsyncSession,
    *,
    venue_id: int,
    product_id: int,
    name: str | None = None,
    price: object | None = None,
    category_id: int | None = None,
    active: bool | None = None,
    sort_order: int | None = None,
    actor_id: int | None = None,
) -> ProductOut:
    product = await get_in_venue(s, Product, product_id, venue_id, "El producto no existe.", "product.not_found")
    changes: dict[str, object] = {}
    if name is not None:
        product.name = changes["name"] = _name(name)
    if price is not None:
        new_price = parse_amount(price, field="price", label="El precio")
        if new_price != product.price:  # the old price stays known for sales taken offline before the change
            s.add(ProductPrice(product_id=product.id, price=product.price, until=utcnow()))
        product.price = changes["price"] = new_price
    if category_id is not None:
        await _category(s, venue_id, category_id)
        product.category_id = changes["category_id"] = category_id
    if active is not None:
        product.active = changes["active"] = active
    if sort_order is not None:
        product.sort_order = sort_order
    await record(
        s,
        venue_id=venue_id,
        user_id=actor_id,
        action="product.updated",
        entity="product",
        entity_id=product.id,
        payload=changes,
    )
    return _prod_out(product)


async def list_products(
    s: AsyncSession, venue_id: int, *, register_id: int | None = None, active_only: bool = True
) -> list[ProductOut]:
    q = select(Product).join(Category, Category.id == Product.category_id).where(Product.venue_id == venue_id)
    if active_only:
        q = q.where(Product.active.is_(True), Category.active.is_(True))
    if register_id is not None:
        register = await s.get(CashRegister, register_id)
        if register is None or register.venue_id != venue_id:
            raise NotFound("La caja no existe.", code="register.not_found")
        if register.allowed_categories:
            q = q.where(Product.category_id.in_(register.allowed_categories))
    q = q.order_by(Category.sort_order, Product.sort_order, Product.name)
    return [_prod_out(p) for p in await s.scalars(q)]


# ---- prices as they were ----------------------------------------------------------------------------------------------
def price_changes_query(product_ids: Iterable[int], since: datetime) -> Select[int, int, datetime]:
    """The price changes of these products after ``since`` (earliest first): with the current prices, what each
    cost at any instant from ``since`` on (``price_as_of``)."""
    return (
        select(ProductPrice.product_id, ProductPrice.price, ProductPrice.until)
        .where(ProductPrice.product_id.in_(list(product_ids)), ProductPrice.until > since)
        .order_by(ProductPrice.until, ProductPrice.id)
    )


def price_as_of(changes: Iterable[Sequence[Any]], product_id: int, current: int, instant: datetime) -> int:
    """What the product cost at ``instant``: the price the first change after that instant replaced, or the
    current price when it has not changed since. ``changes``: the rows of ``price_changes_query`` (earliest
    first) from a ``since`` at or before ``instant``. A sale taken offline is priced as of when it was sold; a
    line of the POS's cart as of when the cashier added it (the price the cashier saw)."""
    for changed_product, price, until in changes:
        if changed_product == product_id and until > instant:
            return int(price)
    return current


# ---- modifiers ------------------------------------------------------------------------------------------------------
MAX_MODIFIERS_PER_LINE = 10


class ModifierOut(msgspec.Struct, kw_only=True):
    id: int
    name: str
    price_delta: int
    product_id: int | None
    category_id: int | None
    active: bool
    sort_order: int = 0
    group_name: str = ""  # the choice it belongs to ("Tamaño"); "" none
    required: bool = False  # its group must be chosen (one of it) on every line of the product


def _mod_out(m: Modifier) -> ModifierOut:
    return ModifierOut(
        id=m.id,
        name=m.name,
        price_delta=m.price_delta,
        product_id=m.product_id,
        category_id=m.category_id,
        active=m.active,
        sort_order=m.sort_order,
        group_name=m.group_name or "",
        required=bool(m.required),
    )


def _modifier_name(value: str) -> str:
    value = (value or "").strip()
    if not value or len(value) > 60:
        raise ValidationFailed("El nombre del modificador es obligatorio (máximo 60 caracteres).", field="name")
    if any(ord(ch) < 32 for ch in value):
        raise ValidationFailed("El nombre del modificador no puede tener caracteres de control.", field="name")
    return value


async def create_modifier(
    s: AsyncSession,
    *,
    venue_id: int,
    name: str,
    price_delta: object,
    product_id: int | None = None,
    category_id: int | None = None,
    sort_order: int = 0,
    group_name: str = "",
    required: bool = False,
    actor_id: int | None = None,
) -> ModifierOut:
    """A modifier for one product or for every product of a category (exactly one of the two); its price is
    added to the product's, in whole CLP, 0 for none ("sin costo"). ``group_name``: the choice it is one option
    of ("Tamaño"); ``required``: that group must be chosen on every line (the group's other modifiers there
    become required too; see ``set_group_required``)."""
    name = _modifier_name(name)
    group_name = _group_name(group_name)
    if required and not group_name:
        raise ValidationFailed(
            "Un modificador obligatorio necesita un grupo («Tamaño»): el cajero elige uno del grupo.",
            field="group_name",
        )
    if (product_id is None) == (category_id is None):
        raise ValidationFailed("Elija un producto o una categoría (uno de los dos).", field="applies_to")
    if product_id is not None:
        await get_in_venue(
            s, Product, product_id, venue_id, "El producto no existe.", "product.not_found", field="applies_to"
        )
    if category_id is not None:
        await get_in_venue(
            s, Category, category_id, venue_id, "La categoría no existe.", "category.not_found", field="applies_to"
        )
    delta = parse_amount(
        "0" if price_delta in (None, "") else price_delta,
        field="price_delta",
        allow_zero=True,
        label="El precio del modificador",
    )
    same = select(Modifier.id).where(
        Modifier.venue_id == venue_id,
        Modifier.name == name,
        Modifier.active.is_(True),
        Modifier.product_id == product_id if product_id is not None else Modifier.product_id.is_(None),
        Modifier.category_id == category_id if category_id is not None else Modifier.category_id.is_(None),
    )
    if await s.scalar(same):
        raise Conflict(f"El modificador {name!r} ya existe ahí.", code="modifier.exists", field="name")
    modifier = Modifier(
        venue_id=venue_id,
        product_id=product_id,
        category_id=category_id,
        name=name,
        price_delta=delta,
        active=True,
        sort_order=sort_order,
        group_name=group_name,
        required=required,
    )
    s.add(modifier)
    await s.flush()
    if group_name:
        siblings = await _group(s, venue_id, product_id, category_id, group_name)
        if required or any(m.required for m in siblings):  # a group is required or not as a whole
            for m in siblings:
                m.required = True
    await record(
        s,
        venue_id=venue_id,
        user_id=actor_id,
        action="modifier.created",
        entity="modifier",
        entity_id=modifier.id,
        payload={
            "name": name,
            "price_delta": delta,
            "product_id": product_id,
            "category_id": category_id,
            "group": group_name,
            "required": modifier.required,
        },
    )
    return _mod_out(modifier)


def _group_name(value: str) -> str:
    value = (value or "").strip()
    if len(value) > 40 or any(ord(ch) < 32 for ch in value):
        raise ValidationFailed("El grupo tiene hasta 40 caracteres, sin caracteres de control.", field="group_name")
    return value


async def _group(
    s: AsyncSession, venue_id: int, product_id: int | None, category_id: int | None, group_name: str
) -> list[Modifier]:
    q = select(Modifier).where(
        Modifier.venue_id == venue_id,
        Modifier.group_name == group_name,
        Modifier.product_id == product_id if product_id is not None else Modifier.product_id.is_(None),
        Modifier.category_id == category_id if category_id is not None else Modifier.category_id.is_(None),
    )
    return list(await s.scalars(q))


async def set_group_required(
    s: AsyncSession, *, venue_id: int, modifier_id: int, required: bool, actor_id: int | None = None
) -> list[ModifierOut]:
    """Mark the group of ``modifier_id`` (its modifiers for the same product or category) required or not."""
    modifier = await get_in_venue(s, Modifier, modifier_id, venue_id, "El modificador no existe.", "modifier.not_found")
    if not modifier.group_name:
        raise ValidationFailed("Ese modificador no es parte de un grupo.", field="group_name")
    group = await _group(s, venue_id, modifier.product_id, modifier.category_id, modifier.group_name)
    for m in group:
        m.required = required
    await record(
        s,
        venue_id=venue_id,
        user_id=actor_id,
        action="modifier.group_required",
        entity="modifier",
        entity_id=modifier.id,
        payload={"group": modifier.group_name, "required": required},
    )
    return [_mod_out(m) for m in group]


class ModifierChoice(Protocol):
    id: int
    name: str
    group_name: str
    required: bool
    active: bool


def check_groups(product: str, offered: Sequence[ModifierChoice], chosen_ids: Sequence[int]) -> None:
    """The chosen modifiers make a valid choice among the product's ``offered`` ones: at most one of each group,
    and one of each required group (its active modifiers), or a Spanish ``ValidationFailed`` naming the product,
    the group and its options ("Elija Tamaño para Piscola: Simple o Doble")."""
    chosen = set(chosen_ids)
    groups: dict[str, list[ModifierChoice]] = {}
    for m in offered:
        if m.group_name and m.active:
            groups.setdefault(m.group_name, []).append(m)
    for group, options in groups.items():
        picked = [m for m in options if m.id in chosen]
        names = [m.name for m in options]
        listed = " o ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]
        if len(picked) > 1:
            raise ValidationFailed(f"{product}: elija solo uno de {group} ({listed}).", field="modifiers")
        if not picked and any(m.required for m in options):
            raise ValidationFailed(f"Elija {group} para {product}: {listed}.", field="modifiers")


async def set_modifier_active(
    s: AsyncSession, *, venue_id: int, modifier_id: int, active: bool, actor_id: int | None = None
) -> ModifierOut:
    modifier = await get_in_venue(s, Modifier, modifier_id, venue_id, "El modificador no existe.", "modifier.not_found")
    modifier.active = active
    await record(
        s,
        venue_id=venue_id,
        user_id=actor_id,
        action="modifier.updated",
        entity="modifier",
        entity_id=modifier.id,
        payload={"active": active},
    )
    return _mod_out(modifier)


async def list_modifiers(s: AsyncSession, venue_id: int, *, active_only: bool = False) -> list[ModifierOut]:
    q = select(Modifier).where(Modifier.venue_id == venue_id)
    if active_only:
        q = q.where(Modifier.active.is_(True))
    return [_mod_out(m) for m in await s.scalars(q.order_by(Modifier.sort_order, Modifier.name, Modifier.id))]


def modifiers_by_product(products: list[ProductOut], modifiers: list[ModifierOut]) -> dict[int, list[ModifierOut]]:
    """Each product's active modifiers: its own, then its category's (only products that have some)."""
    found: dict[int, list[ModifierOut]] = {}
    for p in products:
        mine = [m for m in modifiers if m.active and m.product_id == p.id]
        mine += [m for m in modifiers if m.active and m.product_id is None and m.category_id == p.category_id]
        if mine:
            found[p.id] = mine
    return found


async def product_modifiers(s: AsyncSession, venue_id: int, product_id: int) -> list[ModifierOut]:
    product = await get_product(s, venue_id, product_id)
    return modifiers_by_product([product], await list_modifiers(s, venue_id, active_only=True)).get(product.id, [])
