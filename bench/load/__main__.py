"""python -m bench.load [--cashiers 50] [--registers 25] [--duration 300] [--kill]

Exit code 0 when every invariant holds, 1 otherwise (the failing checks are printed)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from .run import LoadConfig, run_load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--cashiers", type=int, default=50)
    parser.add_argument("--registers", type=int, default=25)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of selling")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--kill", action="store_true", help="kill -9 and restart an instance at random moments")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database for inspection")
    args = parser.parse_args(argv)
    if args.cashiers < args.registers:
        parser.error("--cashiers must be at least --registers (each register needs a cashier)")
    config = LoadConfig(
        cashiers=args.cashiers,
        registers=args.registers,
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
