"""Reading flusso.yaml: YAML 1.2 booleans, no key twice, `${VAR}` expansion, then one pydantic pass.

Every problem is reported at once (DESIGN §3, §7): those of the environment variables and those of
validating the models, each at its path in the file and ending with what would fix it; nothing
echoes a secret. What only the live database can tell (tables, columns, keys, privileges) is
`validate`'s job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..error import ConfigError, Problem
from .messages import problems_from, tidy
from .models import FlussoConfig
from .names import join_path

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, env: Mapping[str, str], path: str, problems: list[Problem]) -> Any:
    """Expand `${VAR}` and `${VAR:-default}` in every string value, as a POSIX shell would.

    `${VAR:-default}` takes the default when VAR is unset or empty; an unset `${VAR}` is a problem.
    """
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if env.get(name):
                return env[name]
            if default is not None:
                return default
            if name in env:
                return ""
            problems.append(
                Problem(
                    path,
                    f"environment variable {name} is not set: export it, "
                    f"or give a default with ${{{name}:-default}}",
                )
            )
            return ""

        expanded = _VAR.sub(sub, value)
        if "${" in _VAR.sub("", value):
            problems.append(
                Problem(
                    path, "a malformed ${...}: write ${VAR} or ${VAR:-default} (names: letters, digits, _)"
                )
            )
        return expanded
    if isinstance(value, dict):
        return {k: expand_env(v, env, join_path(path, str(k)), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return value


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 reads a bare `on` key (our join key) as True."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_yaml(text: str, source: str = "flusso.yaml") -> Any:
    """Parse a flusso.yaml text; bad syntax and a key given twice are `ConfigError`s.

    The parser's own message is not shown as is, nor kept as the cause: its snippet of the
    offending line could hold a password.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        problems = _duplicate_keys(node, "") if node is not None else []
        if problems:
            raise ConfigError(problems, source)
        return loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(p for p in (err.context, err.problem) if p) or "syntax error"
        raise ConfigError(
            [Problem("", f"not valid YAML{where}: {what}: fix the syntax there")], source
        ) from None
    except yaml.YAMLError:
        raise ConfigError([Problem("", "not valid YAML: check the file's syntax")], source) from None
    finally:
        loader.dispose()


def _duplicate_keys(node: yaml.Node, path: str) -> list[Problem]:
    """PyYAML keeps the last of two equal keys; in a config that silently drops an index or a field."""
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                problems.append(
                    Problem(
                        join_path(path, name),
                        f'"{name}" appears twice here (line {key.start_mark.line + 1}): remove or rename one',
                    )
                )
            seen.add(name)
            problems += _duplicate_keys(value, join_path(path, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _duplicate_keys(item, f"{path}[{i}]")
    return problems


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> FlussoConfig:
    """Read, expand and validate a flusso.yaml; raise `ConfigError` listing every problem."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(
            [Problem("", f"cannot read {p}: {reason}: check the path (flusso -c FILE)")], str(p)
        ) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem("", f"{p} is not UTF-8 text: save it as UTF-8")], str(p)) from None
    return parse_config(read_yaml(text, str(p)), env, str(p))


def parse_config(raw: Any, env: Mapping[str, str] | None = None, source: str = "flusso.yaml") -> FlussoConfig:
    """Validate a loaded YAML document; raise `ConfigError` listing every problem.

    pydantic's `ValidationError` is not kept as the cause: it quotes the input, secrets included.
    """
    if raw is None:
        raise ConfigError([Problem("", "the file is empty: give it source, sink and indexes")], source)
    if not isinstance(raw, dict):
        raise ConfigError(
            [Problem("", "the file must hold a mapping (source:, sink:, indexes:), not a list or a value")],
            source,
        )
    env_problems: list[Problem] = []
    data = expand_env(_yaml11_on(raw), os.environ if env is None else env, "", env_problems)
    problems: list[Problem] = []
    config: FlussoConfig | None = None
    try:
        config = FlussoConfig.model_validate(data)
    except ValidationError as err:
        problems = problems_from(err, FlussoConfig)
    problems = tidy(env_problems, problems, data)
    if problems or config is None:
        raise ConfigError(problems, source)
    return config


def _yaml11_on(value: Any) -> Any:
    """A dict from plain `yaml.safe_load` has key True where the file says `on`: give it its name back."""
    if isinstance(value, dict):
        return {("on" if k is True else k): _yaml11_on(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_yaml11_on(v) for v in value]
    return value
