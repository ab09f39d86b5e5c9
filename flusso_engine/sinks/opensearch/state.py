"""flusso's own state documents (the slot's state, see `slotstate.py`; workers' heartbeats,
`heartbeat.py`), in `sink.state_index`.

Each is read with a realtime GET and written with compare-and-set on its sequence number and primary
term, so two runs never both believe they wrote the same state.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from opensearchpy.exceptions import NotFoundError

from .indexes import Indexes

STATE_MAPPING: dict = {
    "settings": {"number_of_shards": 1, "auto_expand_replicas": "0-1"},
    "mappings": {
        "dynamic": False,
        "properties": {
            "slot": {"type": "keyword"},
            "system_identifier": {"type": "keyword"},
            "incarnation": {"type": "keyword"},
            "timeline": {"type": "long"},
            "confirmed_bound": {"type": "long"},
            "version_bound": {"type": "long"},
            "updated_at": {"type": "date"},
        },
    },
}


class StateDocuments(Indexes):
    """The sink's part that reads and writes flusso's state documents."""

    _state_ready: bool  # the state index exists (this sink made sure of it)

    def read_state(self, key: str) -> tuple[dict, Any] | None:
        """The state document `key` of `sink.state_index` (a realtime GET) and its compare-and-set
        token, or None if there is none."""
        try:
            reply = self._call(f"reading {key} from {self.config.state_index}", self.client.get,
                               index=self.config.state_index, id=key)
        except NotFoundError:
            return None
        return dict(reply["_source"]), (reply["_seq_no"], reply["_primary_term"])

    def read_states(self, keys: list[str]) -> dict[str, tuple[dict, Any]]:
        """Several state documents in one realtime request (missing ones are left out)."""
        if not keys:
            return {}
        try:
            reply = self._call(f"reading {len(keys)} documents from {self.config.state_index}", self.client.mget,
                               index=self.config.state_index, body={"ids": list(keys)}, realtime=True)
        except NotFoundError:
            return {}
        return {d["_id"]: (dict(d["_source"]), (d["_seq_no"], d["_primary_term"]))
                for d in reply.get("docs", []) if d.get("found")}

    def write_state(self, key: str, doc: dict, token: Any) -> Any | None:
        """Write `doc` if the stored one is still the one `token` was read with (None: if there is
        none); durable when it returns (the translog is synced per request by default). None when
        someone else wrote first."""
        if not self._state_ready:
            self.ensure_index(self.config.state_index, STATE_MAPPING)
            self._state_ready = True
        body = {**doc, "updated_at": datetime.now(UTC).isoformat()}
        guard: dict[str, Any] = ({"op_type": "create"} if token is None
                                 else {"if_seq_no": token[0], "if_primary_term": token[1]})
        reply = self._call(f"writing {key} to {self.config.state_index}", self.client.index,
                           index=self.config.state_index, id=key, body=body, ignore=409, **guard)
        if reply.get("status") == 409 or "_seq_no" not in reply:
            return None  # version_conflict_engine_exception: someone else wrote it first
        return reply["_seq_no"], reply["_primary_term"]
