"""/admin/productos: categories and products."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Template

from caja_core.catalog import service as catalog

from ..auth import FORM
from ..context import Web


class CategoryForm(msgspec.Struct, kw_only=True):
    name: str = ""
    sort_order: int = 0


class ProductForm(msgspec.Struct, kw_only=True):
    category_id: int = 0
    name: str = ""
    price: str = ""
    sort_order: int = 0
    shortcut: str = ""
    active: str = ""


class ToggleForm(msgspec.Struct, kw_only=True):
    active: str = ""


async def catalog_context(web: Web) -> dict:
    return {
        "categories": await web.call(catalog.list_categories, web.venue_id),
        "products": await web.call(catalog.list_products, web.venue_id, active_only=False),
    }


@get("/productos")
async def catalog_page(request: Request) -> Template:
    web = Web(request)
    return await web.page("admin/catalog.html", **await catalog_context(web))


@post("/productos/categorias")
async def create_category(request: Request, data: Annotated[CategoryForm, FORM]) -> Response:
    web = Web(request)
    async with web.form("admin/catalog.html", lambda: catalog_context(web), category_form=msgspec.to_builtins(data)):
        await web.venue_call(catalog.create_category, name=data.name, sort_order=data.sort_order, actor_id=web.user_id)
    return web.redirect("/admin/productos")


@post("/productos/categorias/{category_id:int}/activa")
async def toggle_category(request: Request, category_id: FromPath[int], data: Annotated[ToggleForm, FORM]) -> Response:
    web = Web(request)
    await web.venue_call(
        catalog.update_category, category_id=category_id, active=data.active == "1", actor_id=web.user_id
    )
    return web.redirect("/admin/productos")


@post("/productos")
async def create_product(request: Request, data: Annotated[ProductForm, FORM]) -> Response:
    web = Web(request)
    async with web.form("admin/catalog.html", lambda: catalog_context(web), form=msgspec.to_builtins(data)):
        await web.venue_call(
            catalog.create_product,
            category_id=data.category_id,
            name=data.name,
            price=data.price,
            sort_order=data.sort_order,
            shortcut=data.shortcut.strip()[:8] or None,
            actor_id=web.user_id,
        )
    return web.redirect("/admin/productos")


async def product_context(web: Web, product_id: int) -> dict:
    return {
        "product": await web.call(catalog.get_product, web.venue_id, product_id),
        "categories": await web.call(catalog.list_categories, web.venue_id),
        "modifiers": await web.call(catalog.product_modifiers, web.venue_id, product_id),
    }


@get("/productos/{product_id:int}/editar")
async def product_page(request: Request, product_id: FromPath[int]) -> Template:
    web = Web(request)
    return await web.page("admin/product_form.html", **await product_context(web, product_id))


@post("/productos/{product_id:int}/editar")
async def update_product(request: Request, product_id: FromPath[int], data: Annotated[ProductForm, FORM]) -> Response:
    web = Web(request)
    async with web.form(
        "admin/product_form.html", lambda: product_context(web, product_id), form=msgspec.to_builtins(data)
    ):
        await web.venue_call(
            catalog.update_product,
            product_id=product_id,
            name=data.name,
            price=data.price,
            category_id=data.category_id,
            active=data.active == "1",
            sort_order=data.sort_order,
            actor_id=web.user_id,
        )
    return web.redirect("/admin/productos")


route_handlers = [catalog_page, create_category, toggle_category, create_product, product_page, update_product]
