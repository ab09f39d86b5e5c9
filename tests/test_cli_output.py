"""What `flusso` prints while it works: every module's INFO lines, and no noise from the HTTP pool."""

from __future__ import annotations

from pathlib import Path

from .e2e import flusso, generate, write_config


def test_backfill_output_shows_every_module_and_no_pool_warnings(bookstore_db: str, index_prefix: str,
                                                                 tmp_path: Path, opensearch) -> None:
    generate(bookstore_db, books=3000)
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix,
                          batch={"max_changes": 100, "flushes_in_flight": 2})
    done = flusso("run", "--no-live", config=config)
    assert done.returncode == 0, done.stderr
    # flusso changing a user's table is said where the user reads (capture's own logger)
    assert "set REPLICA IDENTITY FULL on public.review" in done.stderr
    assert "flusso_engine.capture.wal" in done.stderr
    # 30 flushes with 2 in flight: each thread keeps its connection
    assert "Connection pool is full" not in done.stderr
