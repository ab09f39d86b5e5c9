"""The reseed tests' bound and report (reseed_bound.py), on made-up polls: no services."""

from __future__ import annotations

import pytest

from .reseed_bound import Poll, Report, floors, longest_gap, lower_bounds, window_start


def samples(*rows: int | None, every: float = 1.0) -> list:
    """Row counts read 0.1 s after each poll, polls `every` seconds apart from t=0."""
    return [None if r is None else ((i * every + 0.1, i * every + 0.2), r) for i, r in enumerate(rows)]


def test_window_starts_lag_before_and_earlier_in_a_frozen_span() -> None:
    assert window_start(10.0, 5.0) == 5.0
    assert window_start(10.0, 5.0, frozen=[(8.0, 9.0)]) == 3.0  # within b + lag: from a - lag
    assert window_start(20.0, 5.0, frozen=[(8.0, 9.0)]) == 15.0  # caught up since
    assert window_start(7.0, 5.0, frozen=[(8.0, 9.0)]) == 2.0  # before the span


def test_bound_is_the_least_rows_of_the_window_before_the_poll() -> None:
    rows = [100, 90, 120, 130, 140, 150, 160, 170, 180]
    bounds = lower_bounds([float(i) for i in range(len(rows))], samples(*rows), lag_s=3.0)
    # poll 0 has no earlier sample; poll 2 sees 100 and 90; by poll 5 the window ([2, 5]) starts after
    # the sample of poll 1 was back (1.2): the last one back before it is poll 1's, so 90 still counts
    assert bounds[:4] == [None, 100, 90, 90]
    assert bounds[5] == 90 and bounds[6] == 120 and bounds[8] == 140


def test_the_polls_own_sample_does_not_count() -> None:
    """The poll reads the rows after its searches: an insert in between would raise its bound."""
    assert lower_bounds([0.0, 1.0], samples(100, 200), lag_s=5.0) == [None, 100]


def test_unknown_rows_are_skipped() -> None:
    assert lower_bounds([0.0, 1.0, 2.0, 3.0], samples(None, 50, None, 70), lag_s=5.0) == [None, None, 50, 50]


def test_a_frozen_span_keeps_the_rows_from_before_it() -> None:
    rows = [100, 110, 120, 130, 140, 150, 160, 170]
    times = [float(i) for i in range(len(rows))]
    assert lower_bounds(times, samples(*rows), lag_s=2.0)[7] == 140
    assert lower_bounds(times, samples(*rows), lag_s=2.0, frozen=[(4.0, 5.0)])[7] == 110


def test_floors_take_off_the_deletes_that_may_have_committed_between_two_samples() -> None:
    s = samples(100, 100, 100)  # sent/received (0.1, 0.2), (1.1, 1.2), (2.1, 2.2)
    assert floors(s) == [100, 100, 100]
    # a delete (then an insert) between the first two samples: the rows dipped to 99 unseen
    assert floors(s, deletes=[(0.5, 0.6)]) == [99, 100, 100]
    # a delete whose statement spans the first sample may have committed after it was read
    assert floors(s, deletes=[(0.0, 0.15)]) == [99, 100, 100]
    # one that ended before the sample was sent is in it already; the last sample has no next
    assert floors(s, deletes=[(0.0, 0.05), (2.5, 2.6)]) == [100, 100, 100]
    # one that may have committed in the overlap of two intervals counts in both
    assert floors(s, deletes=[(1.15, 1.18)]) == [99, 99, 100]
    assert lower_bounds([0.0, 1.0, 2.0], s, lag_s=5.0, deletes=[(0.5, 0.6)]) == [None, 99, 99]


def test_longest_gap_counts_the_edges() -> None:
    assert longest_gap([1.0, 1.5, 4.0], start=0.0, end=4.2) == pytest.approx(2.5)
    assert longest_gap([], start=0.0, end=3.0) == 3.0
    assert longest_gap([0.1], start=0.0, end=5.0) == pytest.approx(4.9)


def poll(t: float, count: int | None, rows: int, status: int = 200) -> Poll:
    ok = status == 200
    return Poll(t, ok, status, count if ok else None, count if ok else None, rows, (t + 0.01, t + 0.02))


def test_report_of_a_clean_run() -> None:
    polls = [poll(i * 0.05, 100 + i // 10, 100 + i // 10) for i in range(100)]
    report = Report(polls, start=0.0, end=5.0)
    assert report.problems() == [] and report.margin == 0 and report.longest_gap_s <= 0.05 + 1e-9


def test_report_of_a_delete_and_refill() -> None:
    """What a reseed that deletes the index shows: a 404, then a short count."""
    polls = [poll(0.0, 100, 100), poll(0.05, 100, 100), poll(0.1, None, 100, status=404), poll(0.15, 0, 100),
             poll(0.2, 40, 100), poll(0.25, 100, 100)]
    report = Report(polls, start=0.0, end=0.3)
    failed, short = report.problems()
    assert failed.startswith("1 of 6 polls failed (statuses {200: 5, 404: 1}); first at 0.10s: 404")
    assert short.startswith("2 polls counted below the bound; worst at 0.15s: 0 documents")
    assert report.margin == -100
    assert "longest gap" in report.summary()


def test_report_of_a_stall() -> None:
    polls = [poll(0.0, 10, 10), poll(4.0, 10, 10)]
    assert Report(polls, start=0.0, end=4.05).problems() == ["4.00s without a successful search (at most 3.0s)"]
