"""`flusso dead-letters`: list the documents OpenSearch rejected, and re-drive them once fixed.

A replay rebuilds each dead letter's document through the normal builder, from the current rows,
versioned by the build's WAL position like any live write (so it never overwrites a newer
document), and writes it. A letter whose document now goes in (or whose root row is gone, so its
document is deleted) is removed; one still refused stays, with the new reason: a replay always
dead-letters, whatever `failures.item_rejection` says, since it is working through the letters.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from . import registry
from .config import FlussoConfig
from .documents import DocumentBuilder
from .error import ConfigError, Problem
from .policy import FailurePolicies
from .sinks import DeadLetter, DeadLetterSink, write_built

log = logging.getLogger(__name__)  # under flusso_engine, whose level --log-level sets


@dataclass
class ReplayReport:
    index: str
    replayed: int = 0
    indexed: int = 0  # letters removed: the document went in, or was deleted with its row
    still_rejected: int = 0


def dead_letter_sink(config: FlussoConfig, failures: FailurePolicies) -> DeadLetterSink:
    """A sink of the config's type that keeps dead letters, and dead-letters whatever
    `failures.item_rejection` says (a replay works through the letters)."""
    context = registry.Context.for_sink(config, dataclasses.replace(failures, item_rejection="dead_letter"))
    sink = registry.create("sinks", config.sink.type, context)
    if not isinstance(sink, DeadLetterSink):
        raise ConfigError([Problem("sink.type", f"the {config.sink.type} sink keeps no dead letters: "
                                   "they are kept by the opensearch sink only")])
    return sink


def replay(index: str, letters: Sequence[DeadLetter], builder: DocumentBuilder, sink: DeadLetterSink,
           mapping: dict, chunk_size: int) -> ReplayReport:
    """Rebuild and write the documents of `letters` (all of `index`), chunk by chunk; remove the
    letters of those that went in."""
    report = ReplayReport(index)
    if not letters:
        return report
    sink.ensure_index(index, mapping)  # a missing index is created unseeded: the next run backfills it
    for start in range(0, len(letters), chunk_size):
        chunk = letters[start:start + chunk_size]
        by_id = {d.doc_id: d for d in chunk}
        built = builder.build(index, list(by_id))
        write_built(sink, index, built)
        flushed = sink.flush()
        still = {r.doc_id for r in flushed.rejected if r.index == index}
        sink.remove_dead_letters(index, [d for i, d in by_id.items() if i not in still])
        report.replayed += len(by_id)
        report.still_rejected += len(still & set(by_id))
        report.indexed += len(set(by_id) - still)
    log.info("replayed %d dead letters of %s: %d went in, %d still rejected", report.replayed, index,
             report.indexed, report.still_rejected)
    return report
