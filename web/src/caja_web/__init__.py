"""caja web: the Litestar app (Jinja + HTMX) for the POS and admin pages."""
