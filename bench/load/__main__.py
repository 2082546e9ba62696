"""python -m bench.load [--cashiers 60] [--registers 50] [--terminals 25] [--duration 300] [--kill]

Exit code 0 when every invariant holds, 1 otherwise (the failing checks are printed)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from .run import LoadConfig, run_load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument(
        "--cashiers", type=int, default=60, help="people: one opens each register, the others relieve them"
    )
    parser.add_argument("--registers", type=int, default=50, help="registers, each with its own drawer")
    parser.add_argument("--terminals", type=int, default=25, help="card terminals, shared by a counter's registers")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of selling")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--kill", action="store_true", help="kill -9 and restart an instance at random moments")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database for inspection")
    args = parser.parse_args(argv)
    if not 1 <= args.terminals <= args.registers <= args.cashiers:
        parser.error("need 1 <= --terminals <= --registers <= --cashiers (each register needs a cashier)")
    config = LoadConfig(
        cashiers=args.cashiers,
        registers=args.registers,
        terminals=args.terminals,
        duration_s=args.duration,
        instances=args.instances,
        kill=args.kill,
        seed=args.seed,
        keep_db=args.keep_db,
    )
    result = asyncio.run(run_load(config))
    print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
