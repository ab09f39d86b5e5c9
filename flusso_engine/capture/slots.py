"""What a capture says about its slot and its health, in types every part may read.

Polling fills them too (`capture/polling/health.py`), with a `Backlog` instead of the WAL's numbers.

The WAL backend fills them (`capture/wal/slot.py` reads `pg_replication_slots` in its one query,
`capture/wal/health.py` judges it); `flusso status`, validation and the Dagster slot check show them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..changes import Position
from ..units import human_bytes

Level = Literal["ok", "advice", "warning", "critical"]


@dataclass(frozen=True)
class WalServer:
    """What the server says about its WAL, read with the slot: what bounds a slot, where the WAL lives."""

    current: Position  # pg_current_wal_lsn()
    max_slot_wal_keep_size: int | None  # bytes; None when -1 (unset: a slot may keep WAL without bound)
    max_wal_size: int  # bytes
    wal_segment_size: int  # bytes
    data_directory: str | None  # None unless the role may read it (superuser, pg_read_all_settings)
    port: int
    started_at: int  # pg_postmaster_start_time(), epoch seconds: tells this server's data directory apart
    wal_dir_bytes: int | None  # the size of pg_wal; None unless the role may list it (pg_monitor)
    slots_used: int = 0  # replication slots of any kind and database (against max_replication_slots)


@dataclass(frozen=True)
class SlotInfo:
    """What `pg_replication_slots` says about the slot, positions as integers."""

    slot: str
    plugin: str
    active: bool
    active_pid: int | None
    confirmed_flush_lsn: Position | None
    restart_lsn: Position | None
    current: Position  # pg_current_wal_lsn()
    lag_bytes: int | None  # current - confirmed_flush: the WAL the slot keeps from being recycled
    wal_status: str | None  # reserved | extended | unreserved | lost (lost: the slot is unusable)
    safe_wal_size: int | None = None  # bytes of WAL before the slot is invalidated; None when unbounded
    slot_type: str = "logical"
    database: str | None = None

    @property
    def retained_bytes(self) -> int | None:
        """current - restart_lsn: the WAL the server keeps for this slot (None once it was removed)."""
        return None if self.restart_lsn is None else max(0, self.current - self.restart_lsn)


# The one query of the slot and the server's WAL settings (a row even when the slot does not exist).


@dataclass(frozen=True)
class Reason:
    """One finding: how bad, a stable code for scripts, what happened, and what to do."""

    level: Level
    code: str
    message: str
    fix: str


@dataclass(frozen=True)
class Disk:
    """Free space on the disk that holds pg_wal, when this process can see the server's files."""

    free_bytes: int | None = None
    total_bytes: int | None = None
    wal_dir_bytes: int | None = None  # from the server (pg_ls_waldir), when the role may list it
    note: str = ""


@dataclass(frozen=True)
class Backlog:
    """What polling capture has not had acknowledged yet, and the oldest open transaction (its horizon)."""

    rows: int  # change-log rows not yet acknowledged
    transactions: int
    oldest_s: float | None  # age of the oldest unacknowledged row
    bytes: int  # the change log's size on disk (every slot's rows)
    horizon_pid: int | None = None  # the oldest open transaction of another session
    horizon_s: float | None = None  # its age
    horizon_what: str = ""  # who and what it is, for the message


@dataclass(frozen=True)
class SlotHealth:
    slot: str
    level: Literal["ok", "warning", "critical"]
    reasons: list[Reason] = field(default_factory=list)
    info: SlotInfo | None = None
    server: WalServer | None = None
    disk: Disk = field(default_factory=Disk)
    backlog: Backlog | None = None  # polling capture: its change log instead of the WAL

    @property
    def ok(self) -> bool:
        return self.level == "ok"

    def summary(self) -> str:
        """One line with the slot's numbers, for a log, a check's description or a tick."""
        info, server = self.info, self.server
        if info is None:
            return f"slot {self.slot}: does not exist"
        if self.backlog is not None:
            b = self.backlog
            oldest = f", oldest {b.oldest_s:.0f}s old" if b.oldest_s is not None else ""
            return (f"slot {self.slot} (polling): {'active' if info.active else 'inactive'}, backlog {b.rows} "
                    f"rows in {b.transactions} transactions{oldest}, change log {human_bytes(b.bytes)}")
        parts = [
            "active" if info.active else "inactive",
            f"lag {human_bytes(info.lag_bytes)}",
            f"wal_status {info.wal_status or 'unknown'}",
            f"safe_wal_size {human_bytes(info.safe_wal_size) if info.safe_wal_size is not None else 'unbounded'}",
        ]
        if server is not None:
            keep = server.max_slot_wal_keep_size
            parts.append(f"max_slot_wal_keep_size {human_bytes(keep) if keep is not None else 'unset (-1)'}")
        if self.disk.free_bytes is not None:
            parts.append(f"disk free {human_bytes(self.disk.free_bytes)}")
        return f"slot {self.slot}: " + ", ".join(parts)

    def as_json(self) -> dict[str, Any]:
        info, server = self.info, self.server
        return {
            "health": self.level,
            "reasons": [asdict(r) for r in self.reasons],
            "wal_status": info.wal_status if info else None,
            "safe_wal_size_bytes": info.safe_wal_size if info else None,
            "retained_bytes": info.retained_bytes if info else None,
            "lag": human_bytes(info.lag_bytes) if info and info.lag_bytes is not None else None,
            "max_slot_wal_keep_size_bytes": server.max_slot_wal_keep_size if server else None,
            "max_wal_size_bytes": server.max_wal_size if server else None,
            "disk": asdict(self.disk),
            **({"backlog": asdict(self.backlog)} if self.backlog is not None else {}),
        }
