"""The same terminal over a pseudo-terminal (the USB serial case): happy path, splits, noise, busy port."""

from __future__ import annotations

import asyncio

import msgspec
import serial

from caja_core.providers import OutcomeKind
from caja_core.testing.waiting import wait_until
from caja_getnet.client import GetnetClient
from caja_getnet.protocol import Deadlines
from caja_getnet.provider import GetnetSettings
from caja_getnet.simulator import Fault, Simulator
from caja_getnet.transport import SerialTransport


async def test_sale_over_serial_is_approved_with_progress(
    make_request, pty_sim, provider, serial_settings, ctx, progress
):
    request = make_request(amount=3500)
    outcome = await provider.charge(request, serial_settings, ctx, progress)
    assert outcome.kind is OutcomeKind.APPROVED and outcome.amount == 3500
    assert progress.codes == [None, 78, 79, 81, 82]
    assert pty_sim.tickets() == {request.ticket: 3500}
    assert (await provider.health(serial_settings, ctx)).kind is OutcomeKind.APPROVED


async def test_split_response_over_serial_is_reassembled(
    make_request, pty_sim, provider, serial_settings, ctx, progress
):
    pty_sim.add_fault(Fault(kind="split_bytes", gap_s=0.002))
    request = make_request(amount=1100)
    patient = msgspec.structs.replace(serial_settings, sale_timeout_s=20)  # ~650 writes: slow on a loaded machine
    outcome = await provider.charge(request, patient, ctx, progress)
    assert outcome.kind is OutcomeKind.APPROVED and outcome.ticket == request.ticket


async def test_noise_before_the_response_over_serial_is_discarded(
    make_request, pty_sim, provider, serial_settings, ctx, progress
):
    pty_sim.add_fault(Fault(kind="noise_before"))
    outcome = await provider.charge(make_request(amount=1200), serial_settings, ctx, progress)
    assert outcome.kind is OutcomeKind.APPROVED and outcome.amount == 1200


async def test_glued_receipt_and_response_in_one_read_over_serial(
    make_request, pty_sim, provider, serial_settings, ctx, progress
):
    pty_sim.add_fault(Fault(kind="glued"))
    outcome = await provider.charge(make_request(), serial_settings, ctx, progress)
    assert outcome.kind is OutcomeKind.APPROVED and progress.codes == [None, 78, 79, 81, 82]


async def test_a_duplicate_left_on_the_line_does_not_touch_the_next_sale(
    make_request, pty_sim, provider, serial_settings, ctx, progress
):
    pty_sim.add_fault(Fault(kind="duplicate_response"))
    first, second = make_request(amount=1000), make_request(amount=2000)
    assert (await provider.charge(first, serial_settings, ctx, progress)).kind is OutcomeKind.APPROVED
    outcome = await provider.charge(second, serial_settings, ctx, progress)
    assert outcome.kind is OutcomeKind.APPROVED and (outcome.ticket, outcome.amount) == (second.ticket, 2000)
    assert pty_sim.tickets() == {first.ticket: 1000, second.ticket: 2000}


async def test_port_busy_is_unavailable_and_nothing_is_sent(
    make_request, pty_sim, provider, serial_settings, ctx, progress
):
    other_program = serial.Serial(pty_sim.pty_path, 115200, exclusive=True)
    try:
        outcome = await provider.charge(make_request(), serial_settings, ctx, progress)
        assert outcome.kind is OutcomeKind.UNAVAILABLE and "ocupado" in outcome.message
    finally:
        other_program.close()
    assert pty_sim.commands == []
    assert (await provider.health(serial_settings, ctx)).kind is OutcomeKind.APPROVED


async def test_case12_unplugged_after_receipt_over_serial_is_in_doubt_and_reconciles_once_back(
    make_request, fast, pty_sim, provider, serial_settings, ctx, progress
):
    pty_sim.add_fault(Fault(kind="disconnect_after_receipt", charged=True))
    request = make_request(amount=7000)
    outcome = await provider.charge(request, serial_settings, ctx, progress)
    assert outcome.kind is OutcomeKind.UNKNOWN
    unplugged = await provider.status(request, serial_settings, ctx)
    assert unplugged.kind is OutcomeKind.UNKNOWN and "No existe el puerto" in unplugged.message
    new_path = await pty_sim.start_pty()  # plugged back (a new device node)
    settings = GetnetSettings(connection="serial", serial_path=new_path, **fast)
    status = await provider.status(request, settings, ctx)
    assert status.kind is OutcomeKind.APPROVED and status.amount == 7000


async def test_cancel_sale_reaches_a_sale_in_flight_on_the_exclusive_serial_port(
    make_request, fast, provider, ctx, progress
):
    sim = Simulator(step_delay_s=0.3)
    path = await sim.start_pty()
    try:
        settings = GetnetSettings(connection="serial", serial_path=path, **fast)
        request = make_request()
        charge = asyncio.create_task(provider.charge(request, settings, ctx, progress))
        await wait_until(lambda: progress.items, timeout_s=5, what="el terminal recibió la venta")
        cancelled = await provider.cancel(request, settings, ctx)
        assert cancelled.kind is OutcomeKind.APPROVED and cancelled.message == "Venta cancelada"
        outcome = await charge
        assert outcome.kind is OutcomeKind.DECLINED and outcome.code == "2"
        assert sim.tickets() == {}
    finally:
        await sim.stop()


async def test_threaded_serial_reader_used_on_windows_works_on_a_pty_too(make_request, pty_sim, fast, ctx):
    pty_sim.add_fault(Fault(kind="noise_before"))
    client = GetnetClient(SerialTransport(pty_sim.pty_path, threaded=True), deadlines=Deadlines(receipt_s=1.0))
    seen = []

    async def progress(code, text):
        seen.append(code)

    answer = await client.sale(amount=990, ticket="W1", progress=progress, deadline_s=10)
    assert (answer["ResponseCode"], answer["Ticket"], answer["Amount"]) == (0, "W1", 990)
    assert seen == [None, 78, 79, 81, 82]
    assert (await client.poll())["ResponseCode"] == 0
    assert pty_sim.tickets() == {"W1": 990}


async def test_seeded_random_faults_over_serial_never_lose_or_invent_a_charge(
    make_request, fast, pty_sim, provider, ctx, progress
):
    settings = GetnetSettings(
        connection="serial", serial_path=pty_sim.pty_path, **(fast | {"receipt_timeout_s": 0.3, "sale_timeout_s": 0.7})
    )
    pty_sim.add_fault(Fault(kind="random", scope="run", seed=77, rate=0.6))
    approved: dict[str, int] = {}
    for i in range(16):
        request = make_request(amount=2000 + i)
        outcome = await provider.charge(request, settings, ctx, progress)
        for _ in range(10):  # in doubt: ask again (the cable may still be out for a moment)
            if outcome.kind is not OutcomeKind.UNKNOWN:
                break
            await asyncio.sleep(0.1)
            outcome = await provider.status(request, settings, ctx)
        assert outcome.kind in (OutcomeKind.APPROVED, OutcomeKind.DECLINED, OutcomeKind.UNAVAILABLE)
        if outcome.kind is OutcomeKind.APPROVED:
            assert (outcome.ticket, outcome.amount) == (request.ticket, request.amount)
            approved[request.ticket] = request.amount
    await wait_until(lambda: pty_sim.idle, timeout_s=10, what="el terminal terminó sus respuestas tardías")
    assert approved == pty_sim.tickets()
    assert 0 < len(approved) < 16
