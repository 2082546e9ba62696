"""A device lease whose holder is a process of this machine that no longer exists is free at once: a server
restarted under a new pid asks the terminal about the charge its previous life left behind without waiting for
the lease's time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from caja_core.clock import SYSTEM_CLOCK
from caja_core.payments.leases import LeaseKeeper, process_gone
from caja_core.payments.models import DeviceLease

HOST = socket.gethostname()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(30)  # reaped: the pid names no process now
    return proc.pid


def test_only_a_vanished_process_of_this_machine_is_gone():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not process_gone(f"{HOST}-{child.pid}")  # alive
        pid = dead_pid()
        assert process_gone(f"{HOST}-{pid}")
        assert not process_gone(f"otra-maquina-{pid}")  # another machine's process: judged by its beat
        assert not process_gone("caja-a")  # a name an operator chose: judged by its beat
        assert not process_gone(f"{HOST}-{os.getpid()}")  # this process
        child.kill()
        deadline = time.monotonic() + 10
        while not process_gone(f"{HOST}-{child.pid}"):  # killed, not yet reaped (a zombie): gone all the same
            assert time.monotonic() < deadline, "a killed child never counted as gone"
            time.sleep(0.02)
        assert child.poll() is not None
    finally:
        child.kill()
        child.wait(10)


def test_a_lease_of_a_vanished_local_process_is_dead_at_once_and_any_other_waits_for_its_beat():
    keeper = LeaseKeeper(SYSTEM_CLOCK, f"{HOST}-{os.getpid()}", ttl_s=10.0)
    gone = DeviceLease(device_key="getnet:tcp:1", owner=f"{HOST}-{dead_pid()}", token="a" * 32, beat=3)
    remote = DeviceLease(device_key="getnet:tcp:2", owner="caja-b", token="b" * 32, beat=3)
    assert keeper.gone(gone) and not keeper.alive(gone)
    assert not keeper.gone(remote) and keeper.alive(remote)  # first seen: alive until its beat stands still
