"""Named crash points for the at-least-once tests: `FLUSSO_FAILPOINT=live_flush:2` kills the process
with SIGKILL the second time a live batch has been flushed and not yet acknowledged.

Unset (always, outside tests) a failpoint costs one attribute read.
"""

from __future__ import annotations

import os
import signal
import threading

_spec = os.environ.get("FLUSSO_FAILPOINT", "")
_name, _, _count = _spec.partition(":")
_left = int(_count or 1) if _spec else 0
_lock = threading.Lock()  # flushes run on background threads


def hit(*names: str) -> None:
    """Count a pass through the point known by any of `names` (a rebuild's backfill flush is also a
    `backfill_flush`)."""
    global _left
    if not _spec or _name not in names:
        return
    with _lock:
        _left -= 1
        if _left <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
