"""`bench/run.py --pin` sets every thread's affinity (a JVM's threads each have their own) and gives
it back: tested on a child process of this test, never on the shared services."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
THREADS = ("import threading, time\n"
           "for _ in range(3): threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
           "time.sleep(30)")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_every_thread_is_pinned_then_given_back() -> None:
    sys.path.insert(0, str(BENCH))
    import pin

    child = subprocess.Popen([sys.executable, "-c", THREADS])
    try:
        for _ in range(100):
            if len(pin.threads(child.pid)) >= 4:
                break
            time.sleep(0.05)
        before = {tid: os.sched_getaffinity(tid) for tid in pin.threads(child.pid)}
        saved: dict[int, set[int]] = {}
        assert pin.set_affinity([child.pid], {1}, saved) == len(before) >= 4
        assert all(os.sched_getaffinity(tid) == {1} for tid in pin.threads(child.pid))
        assert saved == before
        for tid, cpus in saved.items():
            os.sched_setaffinity(tid, cpus)
        assert {tid: os.sched_getaffinity(tid) for tid in pin.threads(child.pid)} == before
    finally:
        child.kill()
        child.wait()
