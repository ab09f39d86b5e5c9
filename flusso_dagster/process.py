"""Which process a live_capture run's worker is, and ending it when its run is replaced.

The heartbeat records the worker's machine (host name and boot id), pid and start time; the keeper
kills that process only when it runs on the keeper's own machine (the default run launcher, `dagster
dev`) and the pid still is that very process (same start time: a pid can be reused). A worker on
another machine is the run launcher's to end (`terminate` on Kubernetes or Docker removes it).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .constants import WORKER_KEYS


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None if it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3
    return None if fields[0] in ("Z", "X") else fields[19]  # field 22: starttime


def this_machine() -> str:
    boot = _boot_id()
    return f"{socket.gethostname()}/{boot}" if boot else socket.gethostname()


@dataclass(frozen=True)
class Worker:
    machine: str
    pid: int
    started: str

    @classmethod
    def current(cls) -> Worker:
        pid = os.getpid()
        return cls(this_machine(), pid, _started(pid) or "")

    def metadata(self) -> dict[str, str]:
        """For a heartbeat observation (text, so that the UI does not plot pids)."""
        return {"worker_machine": self.machine, "worker_pid": str(self.pid), "worker_started": self.started}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object]) -> Worker | None:
        values = {k: getattr(metadata.get(k), "value", metadata.get(k)) for k in
                  WORKER_KEYS}
        if not all(isinstance(v, str) and v for v in values.values()):
            return None
        try:
            pid = int(values["worker_pid"])  # type: ignore[arg-type]
        except ValueError:
            return None
        return cls(str(values["worker_machine"]), pid, str(values["worker_started"]))

    def alive_here(self) -> bool:
        """This very process is still running on this machine."""
        return self.machine == this_machine() and self.pid != os.getpid() and _started(self.pid) == self.started

    def terminate(self) -> str:
        """SIGTERM: Dagster makes it the op's interruption, as a termination from the UI (the engine
        flushes and acknowledges, the run ends canceled). Says what it did."""
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return f"its process (pid {self.pid}) had exited"
        return f"sent SIGTERM to its process (pid {self.pid})"

    def end(self, grace_s: float) -> str:
        """Wait up to `grace_s` for it to exit (a termination was asked for), then SIGKILL it: a paused
        (SIGSTOP) or stuck worker answers nothing else, and holds the slot while it lives. Says what it did."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not self.alive_here():
                return f"its worker (pid {self.pid}) exited"
            time.sleep(0.2)
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return f"its worker (pid {self.pid}) exited"
        deadline = time.monotonic() + 10
        while self.alive_here() and time.monotonic() < deadline:
            time.sleep(0.1)
        return f"its worker (pid {self.pid}) was killed"
