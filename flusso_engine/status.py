"""`flusso status`: the capture's health (a slot and its WAL, or polling's change log), a durable queue's
lag per partition and its workers' throughput (`heartbeat.py`), and each index's seeded state, documents,
root rows and generations, as a table or as JSON (exit 3: needs attention)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from . import heartbeat, registry
from .changes import int_to_lsn
from .config import FlussoConfig

if TYPE_CHECKING:
    from .engine import Engine

EXIT_OK = 0  # the codes of cli.py, for the command this module renders
EXIT_ATTENTION = 3


def status(config: FlussoConfig, as_json: bool, engine: Engine) -> int:
    try:
        health = engine.slot_health()
        indexes = [engine.index_status(i) for i in config.indexes]
        queue_status = registry.hook("queue", config.queue.type, "status")  # a durable queue's lag (kafka)
        queue = queue_status(config.queue) if queue_status is not None else None
        if queue is not None and queue.get("members"):
            beats = heartbeat.read(engine.sink, queue["group"], [m["member"] for m in queue["members"]])
            for member in queue["members"]:
                member["heartbeat"] = beats.get(member["member"])
    finally:
        engine.close()
    info = health.info
    code = EXIT_OK if health.ok else EXIT_ATTENTION
    data = {
        "slot": config.source.slot,
        "slot_exists": info is not None,
        "confirmed_lsn": int_to_lsn(info.confirmed_flush_lsn) if info and info.confirmed_flush_lsn else None,
        "lag_bytes": info.lag_bytes if info else None,
        "active": info.active if info else False,
        **health.as_json(),
        **({"queue": queue} if queue is not None else {}),
        "indexes": {
            s.index: {
                "seeded": s.seeded,
                "documents": s.documents,
                "rows": s.rows,
                "definition_current": s.definition_current,
                **(s.generations.summary() if s.generations is not None else {}),
                **({"serving": s.target} if s.generations is not None else {}),  # the alias says what serves
            }
            for s in indexes
        },
    }
    if as_json:
        print(json.dumps(data, indent=2))
        return code
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table


    console = Console(soft_wrap=True)  # a reason is one line, whatever the terminal's width
    if health.backlog is not None or (info is None and config.source.capture == "polling"):
        _polling_lines(console, config, health)
    else:
        _wal_lines(console, config, health, data)
    style = {"critical": "bold red", "warning": "bold yellow", "advice": "cyan", "ok": "bold green"}
    for reason in health.reasons:
        console.print(f"[{style[reason.level]}]{reason.level}[/]: {escape(reason.message)}. Fix: {escape(reason.fix)}")
    console.print(f"health: [{style[health.level]}]{health.level}[/]")
    if queue is not None:
        parts = ", ".join(f"{p}: {v['lag']}" for p, v in queue.get("partitions", {}).items())
        console.print(f"queue {queue['type']} topic {queue['topic']}, group {queue['group']}: " + (
            queue["error"] if "error" in queue else f"lag {queue['lag']} changes ({parts})" if queue["exists"]
            else "no topic yet (`flusso run` creates it)"), markup=False)
        for member in queue.get("members", []):
            console.print(_worker_line(member), markup=False)
    table = Table("index", "seeded", "documents", "root rows", "definition", "serving", "building")
    for s in indexes:
        table.add_row(s.index, "yes" if s.seeded else "no", str(s.documents), str(s.rows),
                      "current" if s.definition_current else "changed: reseed" if s.target else "no index yet",
                      *_generations(s.generations, s.target))
    console.print(table)
    return code


def _wal_lines(console, config: FlussoConfig, health, data: dict) -> None:  # noqa: ANN001 - rich Console, SlotHealth
    """The slot and the server's WAL, as `status` shows them for capture: wal."""
    from .units import human_bytes

    info, server = health.info, health.server
    if info is None:
        console.print(f"slot [bold]{config.source.slot}[/]: not created yet (`flusso run` creates it)")
    else:
        safe = human_bytes(info.safe_wal_size) if info.safe_wal_size is not None else "unbounded"
        console.print(
            f"slot [bold]{config.source.slot}[/]: confirmed {data['confirmed_lsn']}, "
            f"lag {human_bytes(info.lag_bytes)} ({info.lag_bytes} bytes), {'active' if info.active else 'inactive'}, "
            f"wal_status {info.wal_status}, safe_wal_size {safe}"
        )
    keep, disk = server.max_slot_wal_keep_size, health.disk
    facts = [f"max_slot_wal_keep_size {human_bytes(keep) if keep is not None else 'unset (-1)'}",
             f"max_wal_size {human_bytes(server.max_wal_size)}"]
    if disk.wal_dir_bytes is not None:
        facts.append(f"pg_wal holds {human_bytes(disk.wal_dir_bytes)}")
    facts.append(f"disk free {human_bytes(disk.free_bytes)} of {human_bytes(disk.total_bytes)}"
                 if disk.free_bytes is not None else f"disk free {disk.note}")
    console.print("server: " + ", ".join(facts), markup=False)


def _polling_lines(console, config: FlussoConfig, health) -> None:  # noqa: ANN001 - rich Console, SlotHealth
    """The cursor and the change log's backlog, as `status` shows them for capture: polling."""
    from .units import human_bytes

    info, b, src = health.info, health.backlog, config.source
    if info is None or b is None:
        console.print(f"slot [bold]{src.slot}[/] (polling): not installed yet (`flusso run` creates the change log "
                      f"and triggers in schema {src.polling_schema})")
        return
    oldest = f"{b.oldest_s:.0f}s" if b.oldest_s is not None else "none"
    console.print(f"slot [bold]{src.slot}[/] (polling, schema {src.polling_schema}): confirmed "
                  f"{int_to_lsn(info.confirmed_flush_lsn or 0)}, {'active' if info.active else 'inactive'}, backlog "
                  f"{b.rows} rows in {b.transactions} transactions, oldest unacknowledged {oldest}, change log "
                  f"{human_bytes(b.bytes)}")
    if b.horizon_s is not None:
        console.print(f"oldest open transaction: {b.horizon_s:.0f}s (pid {b.horizon_pid}, {b.horizon_what})",
                      markup=False)


def _generations(state, target: str | None) -> tuple[str, str]:  # noqa: ANN001 - generations.IndexState or None
    """What the name serves now (the alias's target), and the rebuild's progress, as `status` shows them."""
    if state is None:
        return "-", "-"
    serving = target or "none (no index or alias of this name)"
    b = state.building
    if b is None:
        return serving, "-"
    done = f"{b.documents}/{b.rows}" if b.rows else str(b.documents)
    pct = f" {100 * b.documents / b.rows:.0f}%" if b.rows else ""
    note = "" if b.alive() else " (abandoned: the next start deletes it)"
    frozen = " (serving frozen: definition changed)" if b.frozen else ""
    return serving, f"{b.name}: {done}{pct}{frozen}{note}"


def _worker_line(member: dict) -> str:
    """One member of the workers' group: its partitions, and what its last heartbeat says it did."""
    parts = ",".join(map(str, member["partitions"])) or "none"
    beat = member.get("heartbeat")
    if beat is None:
        return f"  worker {member['member']} ({member['host']}): partitions {parts}, no heartbeat yet"
    return (f"  worker {member['member']} ({beat['host']} pid {beat['pid']}): partitions {parts}, "
            f"{beat['changes_per_s']:.1f} changes/s, {beat['documents_per_s']:.1f} documents/s over "
            f"{beat['interval_s']:.0f}s, {beat['changes']} changes in all, heartbeat {beat.get('age_s', 0):.0f}s ago")
