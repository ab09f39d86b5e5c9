"""The worker's flushes in flight: acknowledgements stay in order and wait for every earlier flush.

The sink here is a stand-in whose flushes finish when the test says so: what is tested is the
worker's bookkeeping (which batch may be acknowledged when), not a sink. The same path against the
real services runs in every engine test (flushes_in_flight defaults to 2).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Sequence

import pytest

from flusso_engine.changes import Change, commit
from flusso_engine.documents import Built
from flusso_engine.error import SinkError
from flusso_engine.observer import BatchStats
from flusso_engine.pipeline import CaptureThread, Worker, drive
from flusso_engine.pipeline.batching import IDLE_S, POLL_S, SETTLE_S, GroupCommit
from flusso_engine.queue.channel import Channel
from flusso_engine.sinks import FlushReport


class Builder:
    """Each change is the document whose id is its row's `id`."""

    def resolve(self, changes: Sequence[Change]) -> dict[str, set[str]]:
        return {"books": {str(c.new["id"]) for c in changes if c.new}}

    def build(self, index: str, ids: Collection[str], after: Collection[int] = ()) -> Built:
        return Built({i: {"id": i} for i in ids}, position=1)


class GatedSink:
    """Every detached flush waits for its own gate; `sent` lists the ids of each flush in order."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.buffer: list[str] = []
        self.sent: list[list[str]] = []
        self.gates: list[threading.Event] = []
        self.fail_on = fail_on
        self.flushed_in_line = 0
        self.lock = threading.Lock()

    def write(self, index: str, doc_id: str, doc: object, version: int) -> None:
        self.buffer.append(doc_id)

    def flush(self) -> FlushReport:
        self.flushed_in_line += 1
        written, self.buffer = len(self.buffer), []
        return FlushReport(written=written, requests=1)

    def detach(self) -> Callable[[], FlushReport]:
        ids, self.buffer = self.buffer, []
        gate = threading.Event()
        number = len(self.gates)
        self.gates.append(gate)
        with self.lock:
            self.sent.append(ids)

        def send() -> FlushReport:
            assert gate.wait(10), "the test never opened this flush's gate"
            if number == self.fail_on:
                raise SinkError("bulk write failed after 6 attempts")
            return FlushReport(written=len(ids), requests=1)

        return send


class Recorder:
    def __init__(self) -> None:
        self.flushed: list[BatchStats] = []

    def batch_flushed(self, stats: BatchStats) -> None:
        self.flushed.append(stats)


def batch(first: int, count: int, position: int) -> list[Change]:
    rows = [Change("public.book", "insert", new={"id": i}, position=position) for i in range(first, first + count)]
    return [*rows, commit(position)]


def worker(sink: GatedSink, in_flight: int, **kwargs: object) -> Worker:
    return Worker(Builder(), sink, max_changes=10, observer=Recorder(), in_flight=in_flight, **kwargs)


def wait_for(condition: Callable[[], bool]) -> None:
    event = threading.Event()
    for _ in range(200):
        if condition():
            return
        event.wait(0.01)
    raise AssertionError("condition not reached")


def test_a_batch_is_done_only_when_it_and_every_earlier_flush_succeeded() -> None:
    sink = GatedSink()
    w = worker(sink, in_flight=2)
    w.handle(batch(0, 10, position=100))
    w.handle(batch(10, 10, position=200))
    assert w.done() == [], "nothing is flushed yet"
    sink.gates[1].set()  # the second batch's flush finishes first
    wait_for(lambda: w.flushes._sent[1][1].done())
    assert w.done() == [], "batch 2 waits for batch 1's flush"
    sink.gates[0].set()
    done = w.done(wait=True)
    assert [s.ack for s in done] == [100, 200]
    assert w.documents == 20
    assert [s.ack for s in w.observer.flushed] == [100, 200]
    w.close()


def test_no_more_than_in_flight_flushes_are_sent_at_once() -> None:
    sink = GatedSink()
    w = worker(sink, in_flight=2)
    w.handle(batch(0, 10, position=100))
    w.handle(batch(10, 10, position=200))
    third = threading.Thread(target=w.handle, args=(batch(20, 10, position=300),))
    third.start()
    third.join(0.3)
    assert third.is_alive(), "the third flush waits for a free slot"
    assert len(sink.sent) == 2
    sink.gates[0].set()
    third.join(5)
    assert not third.is_alive() and len(sink.sent) == 3
    for gate in sink.gates:
        gate.set()
    assert [s.ack for s in w.done(wait=True)] == [100, 200, 300]
    w.close()


def test_a_failed_flush_stops_the_acks_at_the_batch_before() -> None:
    sink = GatedSink(fail_on=1)
    w = worker(sink, in_flight=2)
    w.handle(batch(0, 10, position=100))
    w.handle(batch(10, 10, position=200))
    sink.gates[0].set()
    wait_for(lambda: w.flushes._sent[0][1].done())
    assert [s.ack for s in w.done()] == [100]
    sink.gates[1].set()
    with pytest.raises(SinkError, match="bulk write failed"):
        w.done(wait=True)
    with pytest.raises(SinkError):
        w.done()  # still failed: batch 2 never counts as done
    assert w.documents == 10
    w.close()


def test_a_chunked_batch_is_done_after_its_last_chunk() -> None:
    sink = GatedSink()
    w = worker(sink, in_flight=3)
    w.handle(batch(0, 25, position=100))  # 3 chunks of at most 10
    assert [len(ids) for ids in sink.sent] == [10, 10, 5]
    sink.gates[0].set()
    sink.gates[1].set()
    wait_for(lambda: w.flushes._sent[1][1].done())
    assert w.done() == [], "the batch's last chunk is still in flight"
    sink.gates[2].set()
    assert [s.ack for s in w.done(wait=True)] == [100]
    w.close()


def test_in_flight_zero_flushes_in_line() -> None:
    sink = GatedSink()
    w = worker(sink, in_flight=0)
    w.handle(batch(0, 10, position=100))
    assert sink.flushed_in_line == 1 and sink.gates == []
    assert [s.ack for s in w.done()] == [100]


def test_a_truncate_waits_for_the_flushes_before_it() -> None:
    sink = GatedSink()
    seen: list[int] = []

    def on_truncate(table: str, position: int) -> None:
        seen.append(len(w.flushes._sent))

    w = worker(sink, in_flight=2, on_truncate=on_truncate)
    changes = [*batch(0, 10, position=100)[:-1], Change("public.author", "truncate", position=100), commit(100)]
    releaser = threading.Thread(target=lambda: (wait_for(lambda: len(sink.gates) == 1), sink.gates[0].set()))
    releaser.start()
    w.handle(changes)
    releaser.join()
    assert seen == [0], "the truncate ran with nothing in flight"
    w.close()


def test_drive_acknowledges_an_idle_stream_then_stops_cleanly() -> None:
    sink = GatedSink()
    w = worker(sink, in_flight=2)
    stop, capture_stop = threading.Event(), threading.Event()
    queue = Channel(100, stop=capture_stop)

    def source() -> Iterator[Change]:
        yield from batch(0, 10, position=100)
        capture_stop.wait(10)  # the stream goes idle until the run stops

    capture = CaptureThread(source, queue, capture_stop)
    capture.start()
    acks: list[int] = []
    driver = threading.Thread(target=drive, args=(w, queue, capture, stop, capture_stop, 100, 0.01, acks.append))
    driver.start()
    wait_for(lambda: len(sink.gates) == 1)
    assert acks == [], "nothing is acknowledged before its flush succeeded"
    sink.gates[0].set()
    wait_for(lambda: acks == [100])
    assert capture.is_alive(), "acknowledged while the stream was idle, not at the end"
    stop.set()
    driver.join(5)
    assert not driver.is_alive() and acks == [100]
    w.close()


@pytest.mark.parametrize("in_flight", [0, 2])
def test_the_guard_runs_before_each_flush_with_its_versions_and_the_batchs_commit(in_flight: int) -> None:
    sink = GatedSink()
    calls: list[tuple[int, int, int]] = []  # confirm, version, flushes sent by the sink so far

    def guard(confirm: int, version: int) -> None:
        calls.append((confirm, version, sink.flushed_in_line))

    w = worker(sink, in_flight=in_flight, guard=guard)
    w.handle(batch(0, 15, position=100))  # two chunks of at most 10 documents: two flushes
    for gate in sink.gates:
        gate.set()
    assert [s.ack for s in w.done(wait=True)] == [100]
    assert [(c, v) for c, v, _ in calls] == [(100, 1), (100, 1)]
    if in_flight == 0:
        assert [n for _, _, n in calls] == [0, 1], "each guard ran before its own flush"
    w.close()


def test_a_failing_guard_fails_the_flush_and_nothing_is_acknowledged() -> None:
    sink = GatedSink()

    def guard(confirm: int, version: int) -> None:
        raise SinkError("the state index refused the write")

    w = worker(sink, in_flight=2, guard=guard)
    with pytest.raises(SinkError, match="state index"):  # raised by whichever call settles the flush
        w.handle(batch(0, 5, position=100))
        w.done(wait=True)
    assert not sink.gates[0].is_set(), "the documents were never sent"
    assert w.observer.flushed == [], "no batch was done, so none can be acknowledged"
    w.close()


# --- group commit: the decision, then drive with it -------------------------------------------------


def test_group_commit_hands_over_when_idle_and_gathers_behind_a_flush() -> None:
    policy = GroupCommit(max_changes=100, max_delay=0.2)
    idle = {"in_flight": False, "drained": True, "stopping": False}
    assert policy.hand_over(1, 0.0, **idle), "a quiet stream's change goes at once, not after max_delay"
    assert not policy.hand_over(0, 1.0, **idle), "nothing gathered, nothing to hand over"
    assert not policy.hand_over(5, 0.01, in_flight=True, drained=True, stopping=False), \
        "a flush on the wire: keep gathering"
    assert not policy.hand_over(5, 0.01, in_flight=False, drained=False, stopping=False), \
        "changes still arriving (the look filled what it asked for): keep taking them"
    assert policy.hand_over(5, 0.2, in_flight=True, drained=False, stopping=False), "max_delay stays the bound"
    assert policy.hand_over(100, 0.0, in_flight=True, drained=False, stopping=False), "a full batch goes"
    assert policy.hand_over(5, 0.0, in_flight=True, drained=False, stopping=True), "a stopping run drains"


def test_group_commit_waits_briefly_only_behind_a_flush() -> None:
    policy = GroupCommit(max_changes=100, max_delay=0.2)
    assert policy.wait(0, 0.0, in_flight=False) == IDLE_S
    assert policy.wait(0, 0.0, in_flight=True) == SETTLE_S, "an idle stream's ack settles within ~50 ms"
    assert policy.wait(3, 0.0, in_flight=False) == 0.0, "handed over at once: no wait"
    assert policy.wait(3, 0.0, in_flight=True) == POLL_S, "looks often whether the flush finished"
    assert policy.wait(3, 0.199, in_flight=True) == pytest.approx(0.001), "never past max_delay"
    assert policy.wait(3, 0.5, in_flight=True) == 0.0


def test_drive_flushes_a_lone_change_at_once_and_gathers_the_rest_behind_its_flush() -> None:
    sink = GatedSink()
    w = worker(sink, in_flight=2)
    stop, capture_stop = threading.Event(), threading.Event()
    queue = Channel(100, stop=capture_stop)
    more = threading.Event()

    def source() -> Iterator[Change]:
        yield from batch(0, 1, position=100)
        more.wait(10)
        for i in range(1, 5):
            yield from batch(i, 1, position=100 + 100 * i)
        capture_stop.wait(10)

    capture = CaptureThread(source, queue, capture_stop)
    capture.start()
    acks: list[int] = []
    # max_delay 5 s: waiting it out would fail every wait_for below (2 s)
    driver = threading.Thread(target=drive, args=(w, queue, capture, stop, capture_stop, 100, 5.0, acks.append))
    driver.start()
    wait_for(lambda: len(sink.gates) == 1)
    assert sink.sent == [["0"]], "the lone change was flushed without waiting out max_delay"
    more.set()
    wait_for(lambda: len(queue) == 0)
    threading.Event().wait(0.1)
    assert len(sink.gates) == 1, "the changes that came while a flush was on the wire are gathered"
    sink.gates[0].set()
    wait_for(lambda: len(sink.gates) == 2)
    assert sink.sent[1] == ["1", "2", "3", "4"], "handed over together once the flush finished"
    wait_for(lambda: acks == [100])
    sink.gates[1].set()
    wait_for(lambda: acks == [100, 500])
    stop.set()
    driver.join(5)
    assert not driver.is_alive()
    w.close()


class CountingChannel(Channel):
    """A channel that counts the `get_batch` calls that returned changes (a durable queue remembers
    each such read's offsets until it is told the batch holding it was flushed)."""

    reads = 0

    def get_batch(self, max_items: int, max_delay: float, timeout: float | None = None) -> list[Change]:
        got = super().get_batch(max_items, max_delay, timeout)
        self.reads += bool(got)
        return got


def test_drive_reports_every_read_that_a_flushed_batch_gathered() -> None:
    sink = GatedSink()
    w = worker(sink, in_flight=2)
    stop, capture_stop = threading.Event(), threading.Event()
    queue = CountingChannel(100, stop=capture_stop)
    more, paced = threading.Event(), threading.Event()

    def source() -> Iterator[Change]:
        yield from batch(0, 1, position=100)
        more.wait(10)
        for i in range(1, 5):  # one at a time: the worker reads them in several calls behind the flush
            yield from batch(i, 1, position=100 + 100 * i)
            paced.wait(0.05)
        capture_stop.wait(10)

    capture = CaptureThread(source, queue, capture_stop)
    capture.start()
    reads: list[int] = []
    driver = threading.Thread(target=drive, args=(w, queue, capture, stop, capture_stop, 100, 5.0, None),
                              kwargs={"on_batch": reads.append})
    driver.start()
    wait_for(lambda: len(sink.gates) == 1)
    more.set()
    wait_for(lambda: len(queue) == 0 and queue.reads >= 3)
    threading.Event().wait(0.3)
    sink.gates[0].set()
    wait_for(lambda: len(sink.gates) == 2)
    sink.gates[1].set()
    wait_for(lambda: len(reads) == 2)
    assert reads[0] == 1 and reads[1] > 1, reads
    assert sum(reads) == queue.reads, "each read is reported once its batch is flushed, none is left behind"
    stop.set()
    driver.join(5)
    assert not driver.is_alive()
    w.close()
