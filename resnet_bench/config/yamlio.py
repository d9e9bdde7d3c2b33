"""YAML for configuration files: duplicate keys, tags and alias bombs refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from resnet_bench.config.errors import ConfigError
from resnet_bench.safeio import open_regular

# YAML bounds: a config file is small; more aliases or nodes than this is an attack
# (a "billion laughs" alias bomb), not a configuration.
MAX_YAML_ALIASES = 64
MAX_YAML_NODES = 100_000

class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and explicit tags, and bounds aliases."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases = getattr(self, "_aliases", 0) + 1
            if self._aliases > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise ConfigError(f"{self.name}:{mark.line + 1}: more than {MAX_YAML_ALIASES} YAML aliases; "
                                  "a config file needs none (refused as a possible alias bomb)")
        else:
            event = self.peek_event()
            tag = getattr(event, "tag", None)
            if tag is not None and tag != "!":
                raise ConfigError(f"{self.name}:{event.start_mark.line + 1}: YAML tag {tag!r} is not allowed; "
                                  "write plain values (tags are refused: they can construct objects)")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(f"{self.name}:{key_node.start_mark.line + 1}: duplicate key {key!r} "
                                  f"(first at line {seen[key]}); YAML would silently keep the last one")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _node_count(node, memo: dict[int, int], depth: int = 0) -> int:
    """Nodes after alias expansion: shared subtrees count once per reference."""
    if id(node) in memo:
        return memo[id(node)]
    if depth > 200:
        raise ConfigError("YAML nesting deeper than 200 levels")
    if isinstance(node, yaml.MappingNode):
        n = 1 + sum(_node_count(k, memo, depth + 1) + _node_count(v, memo, depth + 1) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_node_count(v, memo, depth + 1) for v in node.value)
    else:
        n = 1
    memo[id(node)] = n
    return n


def parse_yaml(text: str, name: str = "<string>") -> Any:
    """Parse one YAML document with the strict loader; ConfigError (one line) on any problem."""
    loader = _StrictLoader(text)
    loader.name = name
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _node_count(node, {}) > MAX_YAML_NODES:
            raise ConfigError(f"{name}: more than {MAX_YAML_NODES} YAML nodes after alias expansion "
                              "(refused as a possible alias bomb)")
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{name}:{mark.line + 1}" if mark else name
        raise ConfigError(f"{where}: invalid YAML: {err.problem or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{name}: invalid YAML: {err}") from None
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> dict:
    """A YAML file whose top level is a mapping (an empty file is an empty mapping)."""
    path = Path(path)
    try:
        with open_regular(path, "r", encoding="utf-8") as f:  # a FIFO or device is refused, not waited on
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:  # a FIFO, a folder, no permission: what it is, not "not found"
        raise ConfigError(f"{path}: {err.strerror}") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
