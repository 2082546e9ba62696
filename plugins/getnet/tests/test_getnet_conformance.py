"""GETNET passes the core's ProviderConformance against the simulated terminal: over TCP, over a serial port
(pty) and through an agent channel."""

from __future__ import annotations

import pytest

import caja_getnet.plugin
from caja_core.providers import ProviderContext
from caja_core.testing.conformance import ProviderConformance
from caja_getnet.agent import InProcessAgentChannel
from caja_getnet.client import GetnetClient
from caja_getnet.protocol import Deadlines
from caja_getnet.provider import GetnetProvider, GetnetSettings
from caja_getnet.simulator import Fault, Simulator
from caja_getnet.transport import TcpTransport

SHORT = {"receipt_timeout_s": 1.0, "sale_timeout_s": 1.5, "short_timeout_s": 1.0, "other_timeout_s": 2.0}


class _GetnetConformance(ProviderConformance):
    plugin = caja_getnet.plugin
    silent_timeout_s = 3.0

    @pytest.fixture
    def provider(self):
        return GetnetProvider()

    async def script_upstream(self, upstream: Simulator, reply: str) -> None:
        if reply == "declined":
            upstream.add_fault(Fault(kind="decline", code=5))
        elif reply == "silent":
            upstream.add_fault(Fault(kind="receipt_then_silence", charged=False))
        elif reply == "unavailable":
            await self.unplug(upstream)

    async def unplug(self, upstream: Simulator) -> None:
        await upstream.stop()


class TestGetnetTcp(_GetnetConformance):
    @pytest.fixture
    async def upstream(self):
        sim = Simulator(step_delay_s=0.01)
        await sim.start_tcp()
        yield sim
        await sim.stop()

    @pytest.fixture
    def settings(self, upstream):
        host, port = upstream.tcp_address
        return GetnetSettings(host=host, port=port, **SHORT)


class TestGetnetSerial(_GetnetConformance):
    @pytest.fixture
    async def upstream(self):
        sim = Simulator(step_delay_s=0.01)
        await sim.start_pty()
        yield sim
        await sim.stop()

    @pytest.fixture
    def settings(self, upstream):
        return GetnetSettings(connection="serial", serial_path=upstream.pty_path, **SHORT)

    async def unplug(self, upstream: Simulator) -> None:
        upstream.unplug_pty()


class TestGetnetAgent(_GetnetConformance):
    @pytest.fixture
    async def upstream(self):
        sim = Simulator(step_delay_s=0.01)
        await sim.start_tcp()
        sim.channel = InProcessAgentChannel(
            GetnetClient(TcpTransport(*sim.tcp_address), deadlines=Deadlines(receipt_s=1.0))
        )
        yield sim
        await sim.stop()

    @pytest.fixture
    def settings(self, upstream):
        return GetnetSettings(connection="agent", **SHORT)

    def context(self, settings, upstream) -> ProviderContext:
        return ProviderContext(register_id=1, venue_id=1, agent=upstream.channel)
