"""The stdout backend of the sink part: each flushed write as one JSON line (see `sink.py`)."""

from .sink import StdoutSink

__all__ = ["StdoutSink"]
