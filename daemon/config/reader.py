"""YAML text -> plain data, remembering the line of every path, with `${ENV}` interpolated.

Problems found on the way (duplicate keys, unset variables, unsupported tags, bad YAML) are
collected, not raised: the loader reports them with the validation's.
"""

from __future__ import annotations

import os
import re
from typing import Any, cast

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from daemon.config import yaml_loader
from daemon.config.problems import Problem, YamlPath, dotted

_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_ENV = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
    r"|(?P<bad>\{))"
)

# libyaml's parser where PyYAML was built with it (daemon/config/yaml_loader.py).
_LOADER: yaml_loader.Loader = yaml_loader.DEFAULT_LOADER


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class Reader:
    """Builds plain data from the composed node tree, remembering each path's line."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[Problem] = []
        self.lines: dict[YamlPath, int] = {}
        # Paths whose value is already reported (unset variable, bad tag): pydantic would
        # only repeat it, less clearly.
        self.reported: set[YamlPath] = set()
        self._constructor = yaml_loader.CoreConstructor()
        self._active: set[int] = set()

    def problem(self, line: int, path: YamlPath, message: str) -> None:
        self.problems.append(Problem(self.filename, line, dotted(path), message))

    def value_problem(self, node: Node, path: YamlPath, message: str) -> None:
        self.problem(_line(node), path, message)
        self.reported.add(path)

    def read(self, text: str) -> dict[str, Any] | None:
        """The data, or None when there is nothing to validate (problems say why)."""
        try:
            root = yaml_loader.compose(text, _LOADER)
            if root is None:
                return {}
            self.lines[()] = _line(root)
            if not isinstance(root, MappingNode):
                kind = "a list" if isinstance(root, SequenceNode) else "a single value"
                self.problem(_line(root), (), f"must be a mapping of sections, not {kind}")
                return None
            return self._mapping(root, ())
        except yaml.YAMLError as exc:
            self.problems.append(_yaml_problem(self.filename, text, exc))
        except RecursionError:  # composing bounds the depth: not expected
            self.problem(1, ("yaml",), "too deeply nested")
        return None

    def _build(self, node: Node, path: YamlPath) -> Any:
        # Composing bounded the nodes, aliases and merges included, that this may visit.
        if id(node) in self._active:
            self.value_problem(node, path, "an alias refers to itself")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            if isinstance(node, SequenceNode):
                self._check_tag(node, _SEQ_TAG, path)
                items = enumerate(node.value)
                return [self._build(item, self._at(item, (*path, i))) for i, item in items]
            return self._scalar(cast(ScalarNode, node), path)
        finally:
            self._active.discard(id(node))

    def _at(self, node: Node, path: YamlPath) -> YamlPath:
        self.lines[path] = _line(node)
        return path

    def _check_tag(self, node: Node, expected: str, path: YamlPath) -> None:
        if node.tag != expected:
            self.value_problem(node, path, f"unsupported YAML tag {node.tag!r}")

    def _mapping(self, node: MappingNode, path: YamlPath) -> dict[str, Any]:
        self._check_tag(node, _MAP_TAG, path)
        result: dict[str, Any] = {}
        for key_node, value_node, merged in self._pairs(node, path, frozenset({id(node)})):
            key = self._key(key_node, path)
            if key is None:
                continue
            child = (*path, key)
            if key in result:
                if not merged:  # a merged key is overridden quietly: that is what << is for
                    first = f"first on line {self.lines[child]}"
                    self.problem(_line(key_node), child, f"duplicate key {key!r} ({first})")
                continue
            result[key] = self._build(value_node, self._at(key_node, child))
        return result

    def _pairs(
        self, node: MappingNode, path: YamlPath, seen: frozenset[int]
    ) -> list[tuple[Node, Node, bool]]:
        """Own pairs first, then those merged in with `<<` (earlier sources win)."""
        own: list[tuple[Node, Node, bool]] = []
        merged: list[tuple[Node, Node, bool]] = []
        for key, value in node.value:
            if key.tag != _MERGE_TAG:
                own.append((key, value, False))
                continue
            sources = value.value if isinstance(value, SequenceNode) else [value]
            for source in sources:
                if not isinstance(source, MappingNode) or id(source) in seen:
                    self.problem(_line(key), path, "<< takes a mapping or a list of mappings")
                    continue
                pairs = self._pairs(source, path, seen | {id(source)})
                merged += [(k, v, True) for k, v, _ in pairs]
        return own + merged

    def _key(self, node: Node, path: YamlPath) -> str | None:
        if not isinstance(node, ScalarNode):
            self.problem(_line(node), path, "a key must be a plain value, not a list or mapping")
            return None
        # Keys are their text: every key here is a name, and `on:` or `1:` should not turn
        # into True or 1 (YAML 1.1 resolution) behind the user's back.
        return str(node.value)

    def _scalar(self, node: ScalarNode, path: YamlPath) -> Any:
        if node.tag == _STR_TAG:
            return self._interpolate(node, path)
        try:
            return self._constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            self.value_problem(node, path, getattr(exc, "problem", None) or str(exc))
            return None

    def _interpolate(self, node: ScalarNode, path: YamlPath) -> str:
        """`${VAR}`, `${VAR:-default}` (also when VAR is empty, as in sh), `$$` -> `$`."""
        text: str = node.value

        def substitute(match: re.Match[str]) -> str:
            if match["dollar"]:
                return "$"
            if match["bad"]:
                self.value_problem(node, path, "bad ${...}: use ${VAR}, ${VAR:-default} or $$")
                return ""
            value = os.environ.get(match["name"])
            if match["default"] is not None and not value:
                return str(match["default"])
            if value is None:
                message = f"environment variable {match['name']} is not set"
                self.value_problem(node, path, message)
                return ""
            return value

        return _ENV.sub(substitute, text) if "$" in text else text


def _yaml_problem(filename: str, text: str, exc: yaml.YAMLError) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else 1
        message = exc.problem or exc.context or "not valid YAML"
        # A composer's context is the main statement ("expected a single document ...").
        if exc.context and exc.problem and not exc.context.startswith("while "):
            message = f"{exc.context}, {exc.problem}"
        return Problem(filename, line, "yaml", message)
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        return Problem(filename, line, "yaml", f"character #x{exc.character:04x}: {exc.reason}")
    return Problem(filename, 1, "yaml", str(exc).splitlines()[0])
