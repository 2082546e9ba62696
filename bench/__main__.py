"""Run every benchmark (bench/p*.py) and print one table of results against their same-run baselines.

    python -m bench            # all
    python -m bench p1 p3      # some

A benchmark module exposes ``main(argv) -> rows`` (rows of benchmark, measured, baseline, ratio/goal);
one that does not is run as a script and its output is printed as it is.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

from .common import table


def main() -> int:
    wanted = [a.lower() for a in sys.argv[1:]]
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name[:1] == "p" and m.name[1:2].isdigit())
    rows, failed = [], []
    for name in names:
        if wanted and not any(name.startswith(w) for w in wanted):
            continue
        print(f"… {name}", file=sys.stderr, flush=True)
        module = importlib.import_module(f"bench.{name}")
        try:
            if hasattr(module, "main"):
                rows.extend(module.main([]))
            else:
                out = subprocess.run(
                    [sys.executable, "-m", f"bench.{name}"], capture_output=True, text=True, cwd=here.parent, check=True
                )
                print(out.stdout)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark does not hide the others' numbers
            failed.append(f"{name}: {exc}")
    if rows:
        print(table(rows))
    for line in failed:
        print(f"FALLÓ {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
