"""Many GETNET terminal simulators in one process: one TCP port and one control channel each.

    python -m bench.load.terminals --count 25 --step-delay 0.15

Prints one JSON line per terminal on stdout (``{"terminal": "SIM00001", "port": …, "control": …}``), then
``ready``, and serves until SIGTERM/SIGINT. Faults are set and ledgers read through each control channel
(``POST /faults``, ``GET /ledger``), exactly as for ``caja getnet simulate``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from caja_getnet.simulator import Simulator


async def serve(count: int, step_delay_s: float, seed: int) -> None:
    sims = []
    for n in range(count):
        sim = Simulator(terminal_id=f"SIM{n + 1:05d}", step_delay_s=step_delay_s, seed=seed + n)
        _, port = await sim.start_tcp("127.0.0.1", 0)
        _, control = await sim.start_control("127.0.0.1", 0)
        sims.append(sim)
        print(json.dumps({"terminal": sim.terminal_id, "port": port, "control": control}), flush=True)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for sim in sims:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=25)
    parser.add_argument("--step-delay", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.count, args.step_delay, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
