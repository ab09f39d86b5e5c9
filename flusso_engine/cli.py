"""The `flusso` command. The only place that installs signal handlers: SIGINT/SIGTERM set the stop event.

Exit codes: 0 success or clean stop; 1 a problem to fix before anything runs (config, database
settings, privileges); 2 a failure while running.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .config import FlussoConfig, load_config
from .error import ConfigError, FlussoError, Problem, SinkError, SourceError

log = logging.getLogger(__name__)

EXIT_OK, EXIT_CONFIG, EXIT_RUNTIME = 0, 1, 2
EXIT_ATTENTION = 3  # `status`: the slot needs attention (health warning or critical); `verify`: drift


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flusso", description="Keep OpenSearch indexes in sync with PostgreSQL.")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        c.add_argument("-c", "--config", required=True, help="path to flusso.yaml")
        return c

    cmd("validate", "check the config against the live database")
    run = cmd("run", "mapping first, backfill unseeded indexes, then follow the database live")
    run.add_argument("--no-live", action="store_true", help="stop after the backfill")
    run.add_argument("--role", choices=["capture", "worker"],
                     help="with queue.type kafka: only capture (slot into the topic) or only a worker (any number)")
    run.add_argument("--recreate-slot", action="store_true",
                     help="drop the replication slot and create it again, reseeding every index (for a slot "
                          "that cannot continue, e.g. after its publication was dropped and created again)")
    bf = cmd("backfill", "backfill unseeded indexes (all with --force), with a progress bar")
    bf.add_argument("--index", action="append", help="only this index (repeatable)")
    bf.add_argument("--force", action="store_true", help="reseed even a seeded index")
    st = cmd("status", "slot health and, per index, seeded state, documents and root rows (exit 3: the slot "
                       "needs attention)")
    st.add_argument("--json", action="store_true")
    td = cmd("teardown", "drop the replication slot and the publication")
    td.add_argument("--yes", action="store_true", help="do not ask")
    dl = cmd("dead-letters", "list the documents OpenSearch rejected; --replay rebuilds and rewrites them")
    dl.add_argument("--index", action="append", help="only this index (repeatable)")
    dl.add_argument("--replay", action="store_true",
                    help="rebuild them from the current rows; the letters of those that go in are removed")
    vf = cmd("verify", "compare every document with a fresh build of its rows; exit 3 on drift (missing, extra, "
                       "stale)")
    vf.add_argument("--index", action="append", help="only this index (repeatable)")
    how = vf.add_mutually_exclusive_group()
    how.add_argument("--sample", type=int, metavar="N", help="check N random root keys and N random documents")
    how.add_argument("--full", action="store_true", help="check every id (the default)")
    vf.add_argument("--repair", action="store_true",
                    help="rebuild exactly the drifted ids (never over a newer document), delete extras, check "
                         "them again; exit 3 only if drift remains")
    vf.add_argument("--report", metavar="FILE", help="every drifted id into FILE (.csv, .parquet or .html)")
    imp = sub.add_parser("import-pgsync", help="convert PGSync's schema.json into a commented flusso.yaml, "
                                               "reading the database's catalog for what PGSync infers")
    imp.add_argument("schema", help="PGSync's schema.json")
    imp.add_argument("-o", "--output", help="write flusso.yaml here (default: stdout)")
    imp.add_argument("--dsn", help="read the catalog here (default: PGSync's PG_URL, or PG_HOST, PG_PORT, "
                                   "PG_USER, PG_PASSWORD and the schema's database)")
    return p


def _import_pgsync(args: argparse.Namespace) -> int:
    """The converted file to -o or stdout; the report (what was not converted, what differs) to stderr."""
    import os

    from .pgsync import import_pgsync

    done = import_pgsync(args.schema, os.environ, args.dsn)
    if args.output:
        with open(args.output, "w") as f:
            f.write(done.text)
    else:
        sys.stdout.write(done.text)
    where = args.output or "stdout"
    print(f"converted {len(done.indexes)} index(es) ({', '.join(done.indexes)}) into {where}", file=sys.stderr)
    for title, lines in (("not converted", done.report.not_converted),
                         ("documents differ from PGSync's", done.report.differences)):
        if lines:
            print(f"{title} ({len(lines)}):", file=sys.stderr)
            for line in lines:
                print(f"  - {line}", file=sys.stderr)
    return EXIT_OK


def _verify(config: FlussoConfig, stop: threading.Event, args: argparse.Namespace) -> int:
    from rich.console import Console

    from .verify import print_report, write_report
    from .verify.report import check_report_path

    check_report_path(args.report)
    if args.sample is not None and args.sample < 1:
        raise ConfigError([Problem("--sample", "N must be at least 1")])
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)  # a log keeps whole rows
    engine = _engine(config, stop)
    try:
        checks = engine.verify(args.index, sample=args.sample)
        print_report(checks, console)
        drifted = sum(len(c.findings) for c in checks)
        if args.report:
            write_report(checks, args.report)
            console.print(f"{drifted} drifted id{'s' if drifted != 1 else ''} written to {args.report}")
        if not drifted or not args.repair:
            return EXIT_ATTENTION if drifted else EXIT_OK
        done = engine.repair(checks)
        console.print(f"repaired: {done.written} written, {done.deleted} deleted, {done.newer} left alone "
                      "(a newer version was there)")
        remaining = sum(len(c.findings) for c in done.remaining)
        print_report(done.remaining, console, title="after the repair")
        return EXIT_ATTENTION if remaining else EXIT_OK
    finally:
        engine.close()


def _setup_logging(level: str) -> None:
    from rich.logging import RichHandler

    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("flusso_engine").setLevel(level)  # every module's logger is under it
    # opensearch-py logs every failed request (a 404 flusso expects, a traceback for a refused TLS
    # handshake) as a warning: flusso says what failed, and what to do, itself
    logging.getLogger("opensearch").setLevel(logging.WARNING if level == "DEBUG" else logging.ERROR)


def _install_stop(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second %s: stopping now, without a final flush", signal.Signals(signum).name)
            raise SystemExit(EXIT_RUNTIME)
        log.info("%s received: stopping (flush, ack, exit)", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _validate(config: FlussoConfig) -> int:
    import psycopg

    from . import registry
    from .refusals import connect_failure, endpoint
    from .validate import validate

    dsn = config.source.dsn.get_secret_value()
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            report = validate(config, conn)
    except psycopg.OperationalError as err:
        print(connect_failure(dsn, err), file=sys.stderr)
        return EXIT_CONFIG
    queue_checks = registry.hook("queue", config.queue.type, "checks")  # a durable queue's brokers (kafka)
    if queue_checks is not None:
        problems, notes = queue_checks(config.queue)
        report.problems += problems
        report.notes += notes
    for note in report.notes:
        print(f"note: {note}")
    if report.problems:
        print(ConfigError(report.problems, f"flusso.yaml, checked against {endpoint(dsn)}"), file=sys.stderr)
        return EXIT_CONFIG
    refused, problems = _sink_refusal(config)
    if refused:
        print(refused, file=sys.stderr)
        return EXIT_CONFIG
    if problems:
        from .redact import redact_url

        where = ", ".join(redact_url(h) for h in getattr(config.sink, "hosts", None) or []) or config.sink.type
        print(ConfigError(problems, f"flusso.yaml, checked against {where}"), file=sys.stderr)
        return EXIT_CONFIG
    print(f"ok: {len(config.indexes)} index(es), {len(config.tables())} table(s)")
    return EXIT_OK


def _sink_refusal(config: FlussoConfig) -> tuple[str | None, list]:
    """Whether the sink refuses flusso (its certificate, the credentials), asked the way `run` asks
    before anything runs (None if it answers or is merely unreachable for now); and the problems it
    finds with the config (an ingest pipeline named that it lacks)."""
    from . import registry
    from .error import Refused, SinkError
    from .policy import FailurePolicies
    from .validate import pipeline_problems

    context = registry.Context.for_sink(config, FailurePolicies.from_config(config.failures))
    sink = registry.create("sinks", config.sink.type, context)
    try:
        preflight = getattr(sink, "preflight", None)
        if preflight is not None:
            preflight()
        return None, pipeline_problems(config, sink)
    except Refused as err:
        return str(err), []
    except SinkError:  # unreachable for now: `run` retries, and checks the pipelines again
        return None, []
    finally:
        close = getattr(sink, "close", None)
        if close is not None:
            close()


def _engine(config: FlussoConfig, stop: threading.Event, progress: bool = False):
    from .engine import Engine
    from .observer import LoggingObserver, ProgressObserver

    observer = ProgressObserver() if progress and sys.stderr.isatty() else LoggingObserver()
    return Engine(config, stop=stop, observer=observer).open()


def _status(config: FlussoConfig, as_json: bool) -> int:
    from .status import status

    return status(config, as_json, _engine(config, threading.Event()))


def _dead_letters(config: FlussoConfig, only: Sequence[str] | None, replay: bool) -> int:
    from rich.console import Console
    from rich.table import Table

    from .deadletters import dead_letter_sink
    from .deadletters import replay as replay_letters
    from .policy import FailurePolicies

    names = _index_names(config, only)
    sink = dead_letter_sink(config, FailurePolicies.from_config(config.failures))
    engine = _engine(config, threading.Event()) if replay else None  # the builder, checked config
    console = Console()
    try:
        for index in names:
            if engine is not None:
                letters = sink.dead_letters(index)
                done = replay_letters(index, letters, engine.builder, sink, engine.builder.mapping(index),
                                      config.batch.max_changes)
                if done.replayed:
                    console.print(f"{index}: replayed {done.replayed}: {done.indexed} went in, "
                                  f"{done.still_rejected} still rejected (their letters kept, with the new reason)")
        table = Table("index", "id", "reason", "failed at")
        total = 0
        for index in names:
            for letter in sink.dead_letters(index):
                total += 1
                shown = letter.doc_id if len(letter.doc_id) <= 80 else letter.doc_id[:77] + "..."
                table.add_row(letter.index, shown, letter.reason, _when(letter.failed_at))
        if total:
            console.print(table)
        console.print(f"{total} dead letter{'s' if total != 1 else ''} in {', '.join(names)}")
    finally:
        sink.close()
        if engine is not None:
            engine.close()
    return EXIT_OK


def _when(iso: str) -> str:
    """A dead letter's `failed_at` to the second, for a table."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso).isoformat(sep=" ", timespec="seconds")
    except ValueError:
        return iso


def _index_names(config: FlussoConfig, only: Sequence[str] | None) -> list[str]:
    names = list(config.indexes)
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ConfigError([Problem("indexes", f'no index named "{u}" (indexes: {", ".join(names)})')
                           for u in unknown])
    return [n for n in names if not only or n in only]


def _set_up(config: FlussoConfig) -> str:
    """What `run` set up for capture, in the words teardown uses."""
    src = config.source
    if src.capture == "polling":
        return f"the triggers flusso_{src.slot}, change log and cursor {src.slot} in schema {src.polling_schema}"
    return f"slot {src.slot} and publication {src.publication}"


def _teardown(config: FlussoConfig, yes: bool) -> int:
    if not yes:
        if not sys.stdin.isatty():
            print(f"teardown drops {_set_up(config)}: pass --yes to confirm", file=sys.stderr)
            return EXIT_CONFIG
        answer = input(f"drop {_set_up(config)}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing dropped")
            return EXIT_OK
    from .engine import Engine

    with Engine(config).open(check=False) as engine:
        engine.teardown()
    print(f"dropped {_set_up(config)}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        if args.command == "import-pgsync":
            return _import_pgsync(args)
        config = load_config(args.config)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "validate":
        return _validate(config)
    stop = threading.Event()
    engine = None
    try:
        if args.command == "status":
            return _status(config, args.json)
        if args.command == "teardown":
            return _teardown(config, args.yes)
        if args.command == "dead-letters":
            return _dead_letters(config, args.index, args.replay)
        _install_stop(stop)
        if args.command == "verify":
            return _verify(config, stop, args)
        engine = _engine(config, stop, progress=args.command == "backfill")
        if args.command == "run":
            if args.role == "worker" and (args.no_live or args.recreate_slot):
                raise ConfigError([Problem("--role worker", "a worker holds no slot and backfills nothing: drop "
                                           "--no-live and --recreate-slot (they belong to --role capture)")])
            engine.run(live=not args.no_live, recreate_slot=args.recreate_slot, role=args.role)
        else:
            created = engine.prepare()
            reports = engine.backfill_unseeded(created, args.index, force=args.force)
            if any(r.rejected for r in reports):
                log.warning("%d documents were rejected", sum(r.rejected for r in reports))
        return EXIT_OK
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    except (SinkError, SourceError, FlussoError) as err:
        log.error("%s", err)
        started = engine is not None and engine.started
        return EXIT_RUNTIME if started or isinstance(err, SinkError) else EXIT_CONFIG
    except Exception as err:  # noqa: BLE001 - a failure while running: nothing past the last flush was acked
        log.error("stopped on an unexpected error: %s: %s", type(err).__name__, err, exc_info=log.isEnabledFor(
            logging.DEBUG))
        return EXIT_RUNTIME
    finally:
        if engine is not None:
            engine.close()


if __name__ == "__main__":
    sys.exit(main())
