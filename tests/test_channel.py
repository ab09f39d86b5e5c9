"""The bounded channel: batching by size and by delay, back-pressure, and stopping."""

from __future__ import annotations

import threading
import time

import pytest

from flusso_engine.queue.channel import Channel


def _put_in_thread(channel: Channel[int], item: int) -> tuple[threading.Thread, list[bool]]:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(channel.put(item)), daemon=True)
    thread.start()
    return thread, result


def test_full_batch_is_returned_at_once_in_order() -> None:
    channel: Channel[int] = Channel(100)
    for i in range(10):
        assert channel.put(i)
    started = time.monotonic()
    assert channel.get_batch(4, max_delay=5.0) == [0, 1, 2, 3]
    assert channel.get_batch(4, max_delay=5.0) == [4, 5, 6, 7]
    assert time.monotonic() - started < 0.5
    assert len(channel) == 2


def test_batch_returns_as_soon_as_max_items_arrive() -> None:
    channel: Channel[int] = Channel(100)

    def produce() -> None:
        for i in range(5):
            time.sleep(0.02)
            channel.put(i)

    threading.Thread(target=produce, daemon=True).start()
    started = time.monotonic()
    assert channel.get_batch(5, max_delay=10.0) == [0, 1, 2, 3, 4]
    assert time.monotonic() - started < 2.0


def test_batch_is_cut_by_max_delay_from_the_first_item() -> None:
    channel: Channel[int] = Channel(100)
    channel.put(1)
    channel.put(2)
    started = time.monotonic()
    assert channel.get_batch(100, max_delay=0.3) == [1, 2]
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 1.5


def test_items_older_than_max_delay_are_returned_without_waiting() -> None:
    channel: Channel[int] = Channel(100)
    channel.put(1)
    time.sleep(0.25)
    started = time.monotonic()
    assert channel.get_batch(100, max_delay=0.2) == [1]
    assert time.monotonic() - started < 0.1


def test_empty_channel_returns_nothing_after_timeout() -> None:
    channel: Channel[int] = Channel(10)
    started = time.monotonic()
    assert channel.get_batch(10, max_delay=0.05, timeout=0.2) == []
    assert 0.15 <= time.monotonic() - started < 1.0


def test_put_blocks_while_full_until_the_consumer_takes() -> None:
    channel: Channel[int] = Channel(2)
    assert channel.put(1) and channel.put(2)
    thread, result = _put_in_thread(channel, 3)
    time.sleep(0.3)
    assert thread.is_alive() and len(channel) == 2, "put must block on a full channel"
    assert channel.get_batch(1, max_delay=0) == [1]
    thread.join(2)
    assert result == [True]
    assert channel.get_batch(10, max_delay=0) == [2, 3]


def test_stop_wakes_a_blocked_put_which_enqueues_nothing() -> None:
    stop = threading.Event()
    channel: Channel[int] = Channel(1, stop=stop)
    channel.put(1)
    thread, result = _put_in_thread(channel, 2)
    time.sleep(0.15)
    stop.set()
    thread.join(1)
    assert not thread.is_alive()
    assert result == [False]
    assert len(channel) == 1
    assert channel.put(3) is False


def test_stop_ends_a_waiting_get_batch() -> None:
    stop = threading.Event()
    channel: Channel[int] = Channel(10, stop=stop)
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    assert channel.get_batch(10, max_delay=5.0) == []
    assert time.monotonic() - started < 1.0


def test_stopped_channel_drains_without_waiting_for_max_delay() -> None:
    stop = threading.Event()
    channel: Channel[int] = Channel(10, stop=stop)
    for i in range(3):
        channel.put(i)
    stop.set()
    started = time.monotonic()
    assert channel.get_batch(2, max_delay=5.0) == [0, 1]
    assert channel.get_batch(2, max_delay=5.0) == [2]
    assert channel.get_batch(2, max_delay=5.0) == []
    assert time.monotonic() - started < 0.5
    assert channel.empty()


def test_many_producers_lose_nothing_through_a_small_channel() -> None:
    channel: Channel[int] = Channel(8)
    producers = [
        threading.Thread(target=lambda base=base: [channel.put(base + i) for i in range(500)], daemon=True)
        for base in (0, 1000, 2000)
    ]
    for p in producers:
        p.start()
    got: list[int] = []
    while len(got) < 1500:
        got += channel.get_batch(64, max_delay=0.01, timeout=2.0)
    assert sorted(got) == sorted(b + i for b in (0, 1000, 2000) for i in range(500))
    for base in (0, 1000, 2000):
        mine = [x for x in got if base <= x < base + 1000]
        assert mine == sorted(mine), "each producer's items keep their order"


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive(capacity: int) -> None:
    with pytest.raises(ValueError):
        Channel(capacity)


def test_a_full_channel_ends_the_wait_for_a_bigger_batch() -> None:
    channel: Channel[int] = Channel(3)
    for i in range(3):
        channel.put(i)
    started = time.monotonic()
    assert channel.get_batch(100, max_delay=5.0) == [0, 1, 2]
    assert time.monotonic() - started < 0.5
