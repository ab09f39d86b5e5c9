"""The polling backend of capture: triggers fill a change log, polled by snapshot (`capture.py` and
`poll.py` say how it works and why nothing is lost), for databases where logical replication is not
allowed. Chosen by `source.capture: polling`."""

from typing import Any

from .capture import PollingCapture, recorded_columns

__all__ = ["PollingCapture", "create", "recorded_columns"]


def create(context: Any) -> PollingCapture:
    """The capture registry's factory for `source.capture: polling`."""
    source = context.config.source
    tables = list(dict.fromkeys(context.plan.captured(context.config.captured_tables())))
    return PollingCapture(
        context.dsn,
        slot=source.slot,
        schema=source.polling_schema,
        columns=recorded_columns(context.plan, context.catalog, tables),
        stop=context.capture_stop,
        poll_interval_s=source.poll_interval_ms / 1000,
        slot_wait_s=source.slot_wait_s,
        long_transaction_s=source.long_transaction_warn_s,
        matviews=sorted(context.plan.matviews),
    )
