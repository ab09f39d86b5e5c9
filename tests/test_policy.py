"""Batch and failure policies from the config, and the retry backoff."""

from __future__ import annotations

import pytest

from flusso_engine.config import BatchConfig, FailuresConfig, FlushErrorConfig
from flusso_engine.policy import BatchPolicy, FailurePolicies


def test_batch_policy_reads_milliseconds_as_seconds() -> None:
    policy = BatchPolicy.from_config(BatchConfig(max_changes=500, max_delay_ms=250))
    assert policy == BatchPolicy(max_changes=500, max_delay=0.25)


def test_failure_policies_from_config() -> None:
    config = FailuresConfig(
        item_rejection="skip", flush_error=FlushErrorConfig(retries=3, backoff_ms=100, max_backoff_ms=2000)
    )
    policy = FailurePolicies.from_config(config)
    assert policy == FailurePolicies(item_rejection="skip", retries=3, backoff_s=0.1, max_backoff_s=2.0)


def test_defaults_match_the_config_defaults() -> None:
    assert FailurePolicies.from_config(FailuresConfig()) == FailurePolicies()
    assert BatchPolicy.from_config(BatchConfig()) == BatchPolicy()


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = FailurePolicies(backoff_s=0.2, max_backoff_s=1.0, jitter=0.0)
    assert [policy.backoff(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_backoff_jitter_only_shortens_the_wait() -> None:
    policy = FailurePolicies(backoff_s=0.2, max_backoff_s=1.0, jitter=0.1)
    for n in range(1, 8):
        nominal = min(1.0, 0.2 * 2 ** (n - 1))
        for _ in range(50):
            assert 0.9 * nominal <= policy.backoff(n) <= nominal


def test_backoff_survives_a_long_outage() -> None:
    assert FailurePolicies(jitter=0.0).backoff(10_000) == 10.0


def test_backoff_counts_retries_from_one() -> None:
    with pytest.raises(ValueError):
        FailurePolicies().backoff(0)
