"""Register settings for GETNET and the plugin's registration with caja."""

from __future__ import annotations

import asyncio

import pytest

from caja_core.errors import ValidationFailed
from caja_core.providers import OutcomeKind, PaymentProvider, ProviderContext, ProviderRegistry, validate_settings
from caja_getnet.provider import GetnetSettings, provider
from caja_getnet.simulator import Simulator


def test_the_plugin_registers_the_getnet_provider(make_caja_pm):
    registry = ProviderRegistry.from_plugin_manager(make_caja_pm())
    assert "getnet" in registry
    assert isinstance(registry.get("getnet"), PaymentProvider)


def test_valid_settings_and_device_keys():
    tcp = validate_settings(provider, {"connection": "tcp", "host": "192.168.1.50", "port": 9100})
    serial = validate_settings(
        provider, {"connection": "serial", "serial_path": "/dev/ttyACM0", "sale_timeout_s": 90, "employee_id": "7"}
    )
    agent = validate_settings(provider, {"connection": "agent"})
    assert isinstance(tcp, GetnetSettings) and tcp.sale_timeout_s == 120 and tcp.receipt_timeout_s == 3
    assert provider.device_key(tcp, "CAJA1") == "getnet:tcp:192.168.1.50:9100"
    assert provider.device_key(serial, "CAJA1") == "getnet:serial:/dev/ttyACM0"
    assert provider.device_key(agent, "CAJA1") == "getnet:agent:CAJA1"
    assert serial.deadlines.sale_s == 90


@pytest.mark.parametrize(
    "raw",
    [
        {"connection": "tcp", "host": "", "port": 9100},
        {"connection": "tcp", "host": "10.0.0.5"},
        {"connection": "serial"},
        {"connection": "bluetooth"},
        {"connection": "agent", "sale_timeout_s": 0},
        {"connection": "agent", "employee_id": "x|y"},
        {"connection": "agent", "employee_id": "C-07"},
        {"connection": "agent", "terminal_timezone": "Marte/Olympus"},
        {"connection": "agent", "unknown_option": 1},
    ],
)
def test_invalid_settings_are_rejected_with_a_spanish_message(raw):
    with pytest.raises(ValidationFailed) as info:
        validate_settings(provider, raw)
    assert info.value.message.startswith("Configuración inválida para GETNET")
    assert info.value.code == "provider.settings_invalid"


def test_the_registered_provider_serves_successive_event_loops(make_request):
    """The plugin's single provider instance keeps one client per terminal; a new event loop (an app restart in
    the same process, or another test) gets a fresh one instead of a lock bound to a dead loop."""

    async def one_night(port: int) -> tuple[OutcomeKind, int]:
        sim = Simulator(step_delay_s=0.01)
        _, bound = await sim.start_tcp(port=port)
        settings = GetnetSettings(host="127.0.0.1", port=bound, receipt_timeout_s=1, sale_timeout_s=5)
        ctx = ProviderContext(register_id=1, venue_id=1)

        async def ignore(_):
            return None

        try:
            request = make_request()
            first = await asyncio.gather(
                provider.charge(request, settings, ctx, ignore), provider.status(request, settings, ctx)
            )  # two callers share the lock
            return first[0].kind, bound
        finally:
            await sim.stop()

    kind, port = asyncio.run(one_night(0))
    assert kind is OutcomeKind.APPROVED
    again, _ = asyncio.run(one_night(port))
    assert again is OutcomeKind.APPROVED


@pytest.mark.parametrize(
    ("host", "port", "why"),
    [
        ("169.254.169.254", 80, "enlace local"),
        ("fe80::1", 9100, "enlace local"),
        ("::ffff:169.254.169.254", 80, "enlace local"),
        ("127.0.0.1", 5432, "PostgreSQL"),
        ("localhost", 6379, "Redis"),
        ("0.0.0.0", 9100, "no es la dirección de un equipo"),
        ("224.0.0.1", 9100, "no es la dirección de un equipo"),
    ],
)
def test_a_terminal_address_cannot_point_at_what_no_terminal_is(host, port, why):
    """Found: "probar terminal" (and a sale) connected to any host and port an admin typed: the cloud's metadata
    service, the server's own database or Redis."""
    with pytest.raises(ValidationFailed) as info:
        validate_settings(provider, {"connection": "tcp", "host": host, "port": port})
    assert why in info.value.message


def test_terminals_on_the_venues_network_and_local_simulators_are_fine():
    for host, port in [("192.168.1.50", 9100), ("10.0.0.5", 9100), ("127.0.0.1", 9100), ("localhost", 30123)]:
        assert validate_settings(provider, {"connection": "tcp", "host": host, "port": port}).host == host
