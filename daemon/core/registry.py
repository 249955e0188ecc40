"""Explicit registries from a YAML `type:` key to the class that implements it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=type[Any])


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, cls: T) -> T:
        """Class decorator; a second class claiming the same `type` is a programming error."""
        key: str = cls.type
        if key in self._items:
            raise ValueError(f"{self.kind} type {key!r} is already registered")
        self._items[key] = cls
        return cls

    def get(self, key: str) -> T:
        return self._items[key]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def config_models(self) -> list[type[Any]]:
        return [cls.Config for _, cls in sorted(self._items.items())]
