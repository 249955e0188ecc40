"""A config problem: FILE:LINE path: message. `ConfigError` carries every problem found."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Where a value sits in the document: section, entry, field, list index...
YamlPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.path}: {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


def dotted(path: YamlPath) -> str:
    return ".".join(map(str, path)) if path else "(top level)"


def line_of(path: YamlPath, lines: Mapping[YamlPath, int]) -> int:
    """The line of `path`, or of its deepest ancestor present in the file (missing fields)."""
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path, 1)
