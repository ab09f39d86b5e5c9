"""What workspace.yaml loads: flusso's definitions for the config named by FLUSSO_CONFIG
(default examples/bookstore/flusso.yaml)."""

from .factory import build_definitions

defs = build_definitions()
