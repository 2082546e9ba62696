"""The customer's digital receipt: a signed, unguessable link per sale, and its QR code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import re

_TOKEN = re.compile(r"^([1-9][0-9]{0,11})-([A-Za-z0-9_-]{22})$")


def _mac(secret: str, sale_id: int) -> str:
    digest = hmac.new(secret.encode(), f"caja-receipt:{sale_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def receipt_token(secret: str, sale_id: int) -> str:
    """``<sale id>-<128-bit HMAC>``: anyone holding the link sees that sale's receipt, nobody can make one."""
    return f"{sale_id}-{_mac(secret, sale_id)}"


def sale_for_token(secret: str, token: str) -> int | None:
    """The sale id a token was made for, or None for anything forged, truncated or malformed."""
    match = _TOKEN.match(token or "")
    if match is None:
        return None
    sale_id = int(match.group(1))
    return sale_id if hmac.compare_digest(match.group(2), _mac(secret, sale_id)) else None


def receipt_url(base_url: str, secret: str, sale_id: int) -> str:
    return f"{base_url.rstrip('/')}/boleta/{receipt_token(secret, sale_id)}"


def qr_svg(data: str) -> str:
    """A QR code as an inline SVG (black on white, scalable)."""
    import qrcode
    from qrcode.image.svg import SvgPathImage

    image = qrcode.make(data, image_factory=SvgPathImage, box_size=10, border=2)
    buf = io.BytesIO()
    image.save(buf)
    svg = buf.getvalue().decode()
    return svg[svg.index("<svg") :]


def barcode_svg(code: str) -> str:
    """The ticket number as a CODE39 barcode (what the printer prints), as an inline SVG."""
    import barcode
    from barcode.writer import SVGWriter

    svg = (
        barcode.Code39(code, writer=SVGWriter(), add_checksum=False)
        .render({"module_height": 8, "module_width": 0.25, "quiet_zone": 2, "write_text": False})
        .decode()
    )
    return svg[svg.index("<svg") :]
