"""How every capture backend reads a database error: can a reconnect cure it, and its first line."""

from __future__ import annotations

import psycopg

_RETRYABLE_CLASSES = ("08", "53", "57")  # connection exception, insufficient resources, operator intervention


def retryable(err: psycopg.Error) -> bool:
    """Whether a reconnect may cure `err`: no SQLSTATE (the connection itself failed), or one of the
    classes that say the server or the link is the trouble rather than the request."""
    state = err.sqlstate or ""
    return not state or state.startswith(_RETRYABLE_CLASSES)


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
