"""Fixtures: a simulated terminal on a real TCP socket or a pseudo-terminal, and short deadlines."""

from __future__ import annotations

import itertools

import pytest

from caja_core.providers import ChargeRequest, Progress, ProviderContext
from caja_getnet.provider import GetnetProvider, GetnetSettings
from caja_getnet.simulator import Simulator

# Short deadlines so faults resolve in well under a second or two.
FAST = {"receipt_timeout_s": 1.0, "sale_timeout_s": 2.0, "short_timeout_s": 1.0, "other_timeout_s": 2.0}

_tickets = itertools.count(1)


@pytest.fixture
async def sim():
    simulator = Simulator(step_delay_s=0.02, message_gap_s=0.005, seed=7)
    await simulator.start_tcp()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def pty_sim():
    simulator = Simulator(step_delay_s=0.02, message_gap_s=0.005, seed=11)
    await simulator.start_pty()
    yield simulator
    await simulator.stop()


@pytest.fixture
def provider():
    return GetnetProvider()


@pytest.fixture
def tcp_settings(sim):
    host, port = sim.tcp_address
    return GetnetSettings(connection="tcp", host=host, port=port, **FAST)


@pytest.fixture
def serial_settings(pty_sim):
    return GetnetSettings(connection="serial", serial_path=pty_sim.pty_path, **FAST)


@pytest.fixture
def ctx():
    return ProviderContext(register_id=1, venue_id=1)


def _make_request(amount: int = 1500, ticket: str | None = None, **extra) -> ChargeRequest:
    ticket = ticket or f"T{next(_tickets)}"
    return ChargeRequest(
        attempt_id=next(_tickets),
        ticket=ticket,
        amount=amount,
        register_id=1,
        register_code="CAJA1",
        venue_id=1,
        device_key="getnet:test",
        **extra,
    )


class ProgressLog:
    def __init__(self) -> None:
        self.items: list[Progress] = []

    async def __call__(self, progress: Progress) -> None:
        self.items.append(progress)

    @property
    def codes(self) -> list[int | None]:
        return [p.code for p in self.items]


@pytest.fixture
def progress():
    return ProgressLog()


@pytest.fixture
def make_request():
    return _make_request


@pytest.fixture
def fast():
    return dict(FAST)
