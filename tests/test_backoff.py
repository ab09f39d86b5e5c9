"""The one backoff: capped exponential delays, and the attempt loop's limits and stops."""

from __future__ import annotations

import threading

import pytest

from flusso_engine.backoff import Attempts, Backoff, retry


def test_delays_double_up_to_the_cap() -> None:
    assert [Backoff(0.5, 10.0).delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_step_that_keeps_failing_is_tried_limit_times_then_raises() -> None:
    calls, waits = [], []
    tries = Attempts(Backoff(0.0, 0.0), 3, threading.Event())

    def step() -> None:
        calls.append(1)
        raise ValueError("down")

    with pytest.raises(ValueError, match="down"):
        retry(step, tries, ValueError, lambda err, pause: waits.append((str(err), tries.failures)))
    assert len(calls) == 3
    assert waits == [("down", 1), ("down", 2)]


def test_a_step_that_recovers_returns_its_value() -> None:
    results = iter([ValueError("once"), "done"])

    def step() -> str:
        value = next(results)
        if isinstance(value, Exception):
            raise value
        return value

    assert retry(step, Attempts(Backoff(0.0, 0.0), 5, threading.Event()), ValueError, lambda *_: None) == "done"


def test_a_stop_ends_the_retries_and_other_errors_are_not_retried() -> None:
    stop = threading.Event()
    stop.set()
    calls = []

    def step() -> None:
        calls.append(1)
        raise ValueError("down")

    with pytest.raises(ValueError):
        retry(step, Attempts(Backoff(0.0, 0.0), 5, stop), ValueError, lambda *_: None)
    assert len(calls) == 1
    with pytest.raises(KeyError):
        retry(lambda: {}["x"], Attempts(Backoff(0.0, 0.0), 5, threading.Event()), ValueError, lambda *_: None)


def test_attempts_count_failures_in_a_row() -> None:
    tries = Attempts(Backoff(1.0, 4.0), 3, threading.Event())
    assert [tries.failed(), tries.failed()] == [1.0, 2.0]
    tries.succeeded()
    assert [tries.failed(), tries.failed(), tries.failed()] == [1.0, 2.0, None]
