"""Slot health: is the replication slot about to fill the database's disk, or already lost?

An inactive slot keeps every WAL segment after its position until it moves again, so a stopped or
abandoned flusso pins WAL for ever unless `max_slot_wal_keep_size` bounds it (then PostgreSQL
invalidates the slot instead, and every index must be reseeded). `judge` turns what the server
says (`read_slot`) into `ok | warning | critical` with one reason per finding, each
with its fix; `flusso status`, `flusso validate` and the Dagster slot check all read it from here.
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import Literal

import psycopg

from ...units import human_bytes
from ..slots import Disk, Level, Reason, SlotHealth, SlotInfo, WalServer  # noqa: F401 - re-exported
from .slot import read_slot

_RANK = {"ok": 0, "advice": 0, "warning": 1, "critical": 2}
RISK_SHARE = 0.25  # a slot with less than this share of max_slot_wal_keep_size left is at risk

RECOVER_LOST = (
    "`flusso teardown --yes` drops the dead slot, then `flusso run` creates a new one and backfills every "
    "index (under Dagster: run teardown, then the seed_sensor reseeds the partitions)"
)
RESTART = "restart capture (`flusso run`, or the live_capture job under Dagster)"
RETIRE = "if this slot is abandoned, `flusso teardown --yes` drops it and its publication"
SET_KEEP = (
    "set max_slot_wal_keep_size (ALTER SYSTEM SET max_slot_wal_keep_size = '20GB'; SELECT pg_reload_conf()) "
    "above the WAL your database writes during the longest stop of flusso you want to survive; a slot left "
    "behind further is then invalidated instead of filling the disk, and flusso must reseed "
    "(`flusso teardown --yes`, then `flusso run`)"
)


def judge(slot: str, server: WalServer, info: SlotInfo | None, warn_lag: int, disk: Disk | None = None) -> SlotHealth:
    """The slot's health from what the server says. Pure: every rule reads on its own."""
    reasons: list[Reason] = []
    keep = server.max_slot_wal_keep_size
    if info is not None:
        lag = info.lag_bytes or 0
        if info.wal_status == "lost":
            reasons.append(Reason(
                "critical", "slot_lost",
                f"slot {slot} was invalidated (wal_status lost): PostgreSQL removed WAL it still needed "
                f"(max_slot_wal_keep_size {human_bytes(keep) if keep is not None else 'unset'}), so the changes "
                "since its position are gone and the indexes it fed may miss them",
                RECOVER_LOST,
            ))
        elif info.wal_status == "unreserved":
            reasons.append(Reason(
                "critical", "slot_unreserved",
                f"slot {slot} is behind by {human_bytes(lag)}, beyond max_slot_wal_keep_size "
                f"({human_bytes(keep) if keep is not None else 'unset'}): the next checkpoint removes WAL it "
                "needs and invalidates it",
                f"{RESTART} now, so that it catches up before the next checkpoint; {RETIRE}",
            ))
        elif keep is not None and info.safe_wal_size is not None and info.safe_wal_size < keep * RISK_SHARE:
            reasons.append(Reason(
                "warning", "slot_at_risk",
                f"slot {slot} has only {human_bytes(max(0, info.safe_wal_size))} of WAL left (safe_wal_size) "
                f"before PostgreSQL invalidates it (max_slot_wal_keep_size {human_bytes(keep)})",
                f"{RESTART}; {RETIRE}",
            ))
        if not info.active and info.wal_status != "lost" and lag >= warn_lag:
            bound = (
                "nothing bounds it (max_slot_wal_keep_size is unset): it grows until the disk is full"
                if keep is None
                else f"PostgreSQL invalidates the slot past max_slot_wal_keep_size ({human_bytes(keep)})"
            )
            reasons.append(Reason(
                "warning", "inactive_lag",
                f"slot {slot} is inactive and holds {human_bytes(lag)} of WAL (lag {lag} bytes, above "
                f"slot.warn_lag {human_bytes(warn_lag)}); {bound}",
                f"{RESTART}; {RETIRE}",
            ))
        if keep is None:
            reasons.append(Reason(
                "advice", "keep_size_unset",
                "max_slot_wal_keep_size is unset (-1): an inactive slot keeps WAL without bound",
                SET_KEEP,
            ))
    worst = max((_RANK[r.level] for r in reasons), default=0)
    level: Literal["ok", "warning", "critical"] = ("ok", "warning", "critical")[worst]  # type: ignore[assignment]
    return SlotHealth(slot=slot, level=level, reasons=reasons, info=info, server=server, disk=disk or Disk())


def local_disk(server: WalServer, dsn: str) -> Disk:
    """Free space of the server's pg_wal when this process runs beside the server and may read its
    data directory (PostgreSQL itself has no SQL function for free space); otherwise a note why not.

    The directory counts as the server's only if its postmaster.pid names the same port and start time
    (within two seconds).
    """
    wal = server.wal_dir_bytes
    if server.data_directory is None:
        return Disk(wal_dir_bytes=wal, note="not reported: the role may not read data_directory "
                                            "(superuser or pg_read_all_settings)")
    host = psycopg.conninfo.conninfo_to_dict(dsn).get("host") or ""
    local = not host or host.startswith("/") or host in ("localhost", "127.0.0.1", "::1", socket.gethostname())
    if not local:
        return Disk(wal_dir_bytes=wal, note=f"not reported: the server runs on {host}, not here")
    try:
        with open(os.path.join(server.data_directory, "postmaster.pid")) as f:
            lines = f.read().splitlines()
        # postmaster.pid is written a moment before the start time the server reports is taken
        same = abs(int(lines[2]) - server.started_at) <= 2 and int(lines[3]) == server.port
        usage = shutil.disk_usage(os.path.join(server.data_directory, "pg_wal")) if same else None
    except (OSError, ValueError, IndexError):
        return Disk(wal_dir_bytes=wal, note="not reported: the server's data directory is not readable from here")
    if usage is None:
        return Disk(wal_dir_bytes=wal, note="not reported: the data directory here belongs to another server")
    return Disk(free_bytes=usage.free, total_bytes=usage.total, wal_dir_bytes=wal, note="the disk of pg_wal")


def slot_health(conn: psycopg.Connection, dsn: str, slot: str, warn_lag: int) -> SlotHealth:
    """Read the slot (`read_slot`, the one slot query) and judge it, with the disk where visible."""
    server, info = read_slot(conn, slot)
    return judge(slot, server, info, warn_lag, local_disk(server, dsn))
