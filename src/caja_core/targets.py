"""Where a payment provider's connection may point: a terminal on the venue's network or a provider's API.

An administrator types a terminal's host and port (and a provider's API address) into a register's settings,
and "Probar terminal" connects there at once. Those fields must never make the server talk to what is not a
terminal or a provider: the cloud's metadata service and other link-local addresses, an unspecified,
multicast or broadcast address, or a database, cache or mail service on the server itself.
"""

from __future__ import annotations

import ipaddress
import socket
import time

#: Services on the server itself that no terminal or provider can be (SSH, SMTP, MySQL, PostgreSQL, Redis,
#: memcached, MongoDB). Other loopback ports stay allowed: simulators and rehearsals run there.
LOCAL_SERVICE_PORTS = {
    22: "SSH",
    25: "SMTP",
    3306: "MySQL",
    5432: "PostgreSQL",
    6379: "Redis",
    11211: "memcached",
    27017: "MongoDB",
}

#: Settings are validated on every payment: a name is resolved at most once in this many seconds.
_RESOLVE_TTL_S = 300.0
_resolved: dict[str, tuple[float, list[ipaddress.IPv4Address | ipaddress.IPv6Address]]] = {}


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses ``host`` names: itself when it is an IP literal, else what the resolver says (nothing
    when it does not resolve: such a target cannot be reached either)."""
    name = host.strip().strip("[]").rstrip(".")
    try:
        return [ipaddress.ip_address(name)]
    except ValueError:
        pass
    key = name.lower()
    cached = _resolved.get(key)
    if cached is not None and time.monotonic() - cached[0] < _RESOLVE_TTL_S:
        return cached[1]
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        infos = []
    found = []
    for info in infos:
        try:
            found.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        except ValueError:
            continue
    _resolved[key] = (time.monotonic(), found)
    return found


def target_problem(host: str, port: int | None) -> str | None:
    """Why a provider may not connect to ``host:port`` (a Spanish sentence), or None when it may."""
    for address in _addresses(host):
        mapped = getattr(address, "ipv4_mapped", None)
        address = mapped or address
        if address.is_link_local:
            return (
                f"{host} es una dirección de enlace local (p. ej. el servicio de metadatos de la nube), no un terminal"
            )
        if address.is_unspecified or address.is_multicast or str(address) == "255.255.255.255":
            return f"{host} no es la dirección de un equipo"
        if address.is_loopback and port in LOCAL_SERVICE_PORTS:
            return f"el puerto {port} de este servidor es {LOCAL_SERVICE_PORTS[port]}, no un terminal ni un proveedor"
    return None


def check_target(host: str, port: int | None) -> None:
    """Raise ``ValueError`` (for a settings field error) when a provider may not connect to ``host:port``."""
    problem = target_problem(host, port)
    if problem:
        raise ValueError(problem)
