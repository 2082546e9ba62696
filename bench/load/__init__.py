"""Load harness: many cashiers on the real POS pages, two app instances on one PostgreSQL, simulated
GETNET terminals with faults, optional kill -9 of one instance, and the invariants checked at the end.

    python -m bench.load --cashiers 60 --registers 50 --terminals 25 --duration 300
    python -m bench.load --kill            # the kill -9 campaign
"""
