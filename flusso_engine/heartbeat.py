"""A worker role's heartbeat: what it did over its last interval, for `flusso status` to show beside the
group's lag per partition.

Each worker writes one small state document of the sink (`sink.state_index`, the store the slot's
state is in already, so a worker needs nothing more than it has) every `HEARTBEAT_S`, keyed by its
consumer group and its member id in that group (`key`): changes/s and documents/s over the interval,
its totals, host and pid, and the sink's `updated_at`. `flusso status` asks the group which members
it has now and reads their documents (one realtime multi-get), so a worker that left or died is not
listed, and one that hangs in the group shows an old age. A heartbeat that cannot be written is
logged and tried again at the next interval: it never stops a worker.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import UTC, datetime
from typing import Any

from .error import FlussoError

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0


def key(group: str, member: str) -> str:
    """The state document of one member of one consumer group."""
    return f"worker.{group}.{member}"


class Heartbeat:
    """Writes a worker's state document every `every` seconds (`beat`, called from the worker's loop)."""

    def __init__(self, sink: Any, group: str, every: float = HEARTBEAT_S) -> None:
        self.sink = sink
        self.group = group
        self.every = every
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._member: str | None = None
        self._token: Any = None
        self._last = (time.monotonic(), 0, 0)

    def beat(self, member: str | None, changes: int, documents: int) -> None:
        """Write the document if `every` has passed; `member` None (not in the group yet) waits."""
        now = time.monotonic()
        since, last_changes, last_docs = self._last
        if member is None or now - since < self.every:
            return
        if member != self._member:  # a new member id (a rejoin): a document of its own
            self._member, self._token = member, None
        seconds = now - since
        doc = {"kind": "worker", "group": self.group, "member": member, "host": self.host, "pid": self.pid,
               "interval_s": round(seconds, 3), "changes_per_s": round((changes - last_changes) / seconds, 2),
               "documents_per_s": round((documents - last_docs) / seconds, 2), "changes": changes,
               "documents": documents}
        self._last = (now, changes, documents)
        try:
            token = self.sink.write_state(key(self.group, member), doc, self._token)
            if token is None:  # written before by this member (a restart of the loop): take its token
                found = self.sink.read_state(key(self.group, member))
                token = self.sink.write_state(key(self.group, member), doc, found[1] if found else None)
            self._token = token
        except FlussoError as err:
            log.warning("worker heartbeat not written (%s); again in %.0f s", err, self.every)


def read(sink: Any, group: str, members: list[str]) -> dict[str, dict[str, Any]]:
    """The heartbeat of each of `members` that wrote one, with its `age_s` (seconds since written)."""
    read_states = getattr(sink, "read_states", None)
    if read_states is None or not members:
        return {}
    found = read_states([key(group, m) for m in members])
    now = datetime.now(UTC)
    out: dict[str, dict[str, Any]] = {}
    for member in members:
        got = found.get(key(group, member))
        if got is None:
            continue
        doc = dict(got[0])
        written = doc.get("updated_at")
        if isinstance(written, str):
            doc["age_s"] = round((now - datetime.fromisoformat(written)).total_seconds(), 1)
        out[member] = doc
    return out
