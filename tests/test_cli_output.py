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


def test_a_rebuild_says_what_it_builds_where_the_user_reads(bookstore_db: str, index_prefix: str, tmp_path: Path,
                                                           opensearch) -> None:
    """Every engine logger is under flusso_engine, whose level --log-level sets: a reseed's own INFO
    lines (the generation it builds, the swap) reach stderr, not only the observer's."""
    generate(bookstore_db, books=200)
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix)
    assert flusso("run", "--no-live", config=config).returncode == 0
    done = flusso("backfill", "--force", config=config)
    assert done.returncode == 0, done.stderr
    assert f"INFO flusso_engine.rebuild: index {index_prefix}books: building generation {index_prefix}books__g2" \
        in done.stderr, done.stderr[-3000:]
