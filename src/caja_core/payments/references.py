"""What a payment confirmed by hand may carry (a backup phone's approval, a supervisor's evidence): the shapes of
its authorization code, voucher, last 4 digits and card brand, and the words for its card type. A leaf module:
the payments service and the offline sync both check a reference with these, and import nothing else for it."""

from __future__ import annotations

import re

AUTH_CODE = re.compile(r"[A-Z0-9]{6}")
VOUCHER = re.compile(r"[A-Za-z0-9-]{3,20}")
LAST4 = re.compile(r"[0-9]{4}")
BRAND = re.compile(r"[A-Za-zÁÉÍÓÚáéíóúñÑ ]{2,20}")
CARD_TYPES = {
    "debito": "debito",
    "débito": "debito",
    "db": "debito",
    "credito": "credito",
    "crédito": "credito",
    "cr": "credito",
    "prepago": "prepago",
}
