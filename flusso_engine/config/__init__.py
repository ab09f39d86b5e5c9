"""The `flusso.yaml` model: pydantic types, `${VAR}` expansion, and every problem at once.

- `models`, `source`, `sink`, `indexes`: the pydantic models, with every rule of the file as their
  validators (one pass: shapes, types, unknown keys and rules such as "a many_to_many needs
  `through`" are all reported together, each at its path);
- `loading`: the YAML loader (YAML 1.2 booleans, no key twice), `${VAR}` expansion, `load_config`
  and `parse_config`;
- `messages`: pydantic's errors in the user's words, did-you-mean;
- `names`: table names and the places of things in the file.

Secrets in DSNs and URLs are hidden by `flusso_engine.redact` (`redact_dsn` is re-exported here).
"""

from ..redact import redact_dsn
from .indexes import OPENSEARCH_FIELD_TYPES, IndexConfig, RelationConfig, ThroughConfig
from .loading import expand_env, load_config, parse_config, read_yaml
from .messages import did_you_mean
from .models import (
    BatchConfig,
    FailuresConfig,
    FlushErrorConfig,
    FlussoConfig,
    IndexLifecycleConfig,
    QueueConfig,
    SlotConfig,
    parse_size,
)
from .names import (
    DEAD_LETTER_SUFFIX,
    OBJECT_RELATIONS,
    RELATION_TYPES,
    qualify,
    relation_path,
    split_table,
    walk_relations,
)
from .sink import SinkConfig
from .source import SourceConfig

__all__ = [
    "DEAD_LETTER_SUFFIX",
    "OBJECT_RELATIONS",
    "OPENSEARCH_FIELD_TYPES",
    "RELATION_TYPES",
    "BatchConfig",
    "FailuresConfig",
    "FlushErrorConfig",
    "FlussoConfig",
    "IndexConfig",
    "IndexLifecycleConfig",
    "QueueConfig",
    "RelationConfig",
    "SinkConfig",
    "SlotConfig",
    "SourceConfig",
    "ThroughConfig",
    "did_you_mean",
    "expand_env",
    "load_config",
    "parse_config",
    "parse_size",
    "qualify",
    "read_yaml",
    "redact_dsn",
    "relation_path",
    "split_table",
    "walk_relations",
]
