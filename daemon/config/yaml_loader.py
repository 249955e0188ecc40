"""YAML for configs: YAML 1.2 scalars, and a bound on what a small text may expand to.

- Scalars follow the YAML 1.2 core schema: `yes`, `on`, `1:30`, `017` and `2024-01-01` are
  text (or decimal 17), not YAML 1.1's true, 90, 15 and a date. Only `true`/`false`, the
  numbers of 1.2 (`0o17` and `0x1f` included), `.inf`/`.nan` and `null`/`~` are not text.
- Composing counts nodes: every node written, and for each alias (also under a `<<` merge
  key) every node it repeats. A document that would expand past MAX_NODES, or nest deeper
  than MAX_DEPTH, is refused at the line where it does ("billion laughs" and merge-key
  bombs: a few hundred bytes that expand to billions of nodes).

libyaml parses where PyYAML was built with it; composing is PyYAML's composer over its
events, which is what lets it count.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, cast

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, ScalarEvent, SequenceStartEvent
from yaml.nodes import Node, ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

# Nodes once aliases and merges are expanded. A config of 5,000 checks has about 50,000;
# composing 250,000 takes about a second and 80 MB.
MAX_NODES = 250_000
# Mappings and lists inside each other. A config nests five or six deep.
MAX_DEPTH = 64


class TooLarge(ComposerError):
    """The document expands past MAX_NODES or nests deeper than MAX_DEPTH."""


class CoreResolver(BaseResolver):
    """The YAML 1.2 core schema's tags for plain scalars (and `<<`, the merge key)."""


_CORE = (
    ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
    (
        "float",
        r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
        "-+.0123456789",
    ),
    ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    ("merge", r"<<", "<"),
)
for _name, _pattern, _first in _CORE:
    CoreResolver.add_implicit_resolver(
        f"tag:yaml.org,2002:{_name}", re.compile(rf"^(?:{_pattern})\Z"), list(_first)
    )


class CoreConstructor(SafeConstructor):
    """Numbers read the YAML 1.2 way, also under an explicit `!!int` or `!!float` tag."""

    def construct_core_int(self, node: ScalarNode) -> int:
        value = str(self.construct_scalar(node))
        if value.startswith(("0o", "0x")):
            return int(value[2:], 8 if value[1] == "o" else 16)
        if "_" in value:  # Python's int() would take 1_000; YAML 1.2 does not
            raise ValueError(f"invalid literal for int() with base 10: {value!r}")
        return int(value)

    def construct_core_float(self, node: ScalarNode) -> float:
        value = str(self.construct_scalar(node))
        special = {".inf": "inf", "+.inf": "inf", "-.inf": "-inf", ".nan": "nan"}
        text = special.get(value.lower(), value)
        if "_" in text:
            raise ValueError(f"could not convert string to float: {value!r}")
        return float(text)


# PyYAML's stubs type add_constructor for its own loaders only.
CoreConstructor.add_constructor("tag:yaml.org,2002:int", CoreConstructor.construct_core_int)  # type: ignore[type-var]
CoreConstructor.add_constructor("tag:yaml.org,2002:float", CoreConstructor.construct_core_float)  # type: ignore[type-var]


class BoundedComposer(Composer):
    """PyYAML's composer, counting the nodes each alias repeats and how deep nodes nest."""

    # From the parser it is mixed with (PyYAML's or libyaml's).
    peek_event: Callable[[], Any]
    get_event: Callable[[], Any]

    def __init__(self) -> None:
        Composer.__init__(self)
        self._count = 0
        self._depth = 0
        # Anchored node -> how many nodes it expands to (its aliases included).
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        # PyYAML's compose_node, counting; without path resolvers (CoreResolver has none).
        event: Any = self.peek_event()
        if event.__class__ is AliasEvent:
            self.get_event()
            node: Node | None = self.anchors.get(event.anchor)
            if node is None:
                message = f"found undefined alias {event.anchor!r}"
                mark: Any = event.start_mark  # libyaml's Mark or PyYAML's
                raise ComposerError(None, None, message, mark)
            # An alias of a node still being composed refers to itself: the reader says so.
            self._charge(self._sizes.get(id(node), 1), event, f"*{event.anchor}")
            return node
        anchor = event.anchor
        if anchor is not None and anchor in self.anchors:
            first: Any = self.anchors[anchor].start_mark
            message = "second occurrence"
            raise ComposerError(
                f"found duplicate anchor {anchor!r}; first occurrence",
                first,
                message,
                event.start_mark,
            )
        start = self._count
        self._charge(1, event, None)
        if event.__class__ is ScalarEvent:
            node = self.compose_scalar_node(anchor)
        else:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                message = f"nested deeper than {MAX_DEPTH} levels"
                raise TooLarge(None, None, message, event.start_mark)
            if event.__class__ is SequenceStartEvent:
                node = self.compose_sequence_node(anchor)
            else:
                node = self.compose_mapping_node(anchor)
            self._depth -= 1
        if anchor is not None:
            self._sizes[id(node)] = self._count - start
        return node

    def _charge(self, nodes: int, event: Any, alias: str | None) -> None:
        self._count += nodes
        if self._count > MAX_NODES:
            message = f"too large: more than {MAX_NODES:,} YAML nodes"
            if alias:
                message = (
                    f"too large: the alias {alias} takes the config past {MAX_NODES:,} YAML "
                    "nodes (aliases and << merges count every node they repeat)"
                )
            raise TooLarge(None, None, message, event.start_mark)


class PyLoader(Reader, Scanner, Parser, BoundedComposer, CoreResolver):
    """The pure-Python parser: slower; its error messages are the ones users see."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        BoundedComposer.__init__(self)
        CoreResolver.__init__(self)


CParser: Any
try:
    import yaml.cyaml as _cyaml

    CParser = getattr(_cyaml, "CParser")  # noqa: B009 (not in the stubs' exports)
except (ImportError, AttributeError):  # PyYAML built without libyaml
    CParser = None
Loader = type[PyLoader] | type[BoundedComposer]

if CParser is not None:

    class CLoader(BoundedComposer, CParser, CoreResolver):  # type: ignore[misc]
        """libyaml's parser (8x faster on a config of a thousand checks), our composer."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            BoundedComposer.__init__(self)
            CoreResolver.__init__(self)

    DEFAULT_LOADER: Loader = CLoader
else:
    DEFAULT_LOADER = PyLoader


def compose(text: str, loader: Loader) -> Node | None:
    """The node tree of the single document in `text`; yaml.YAMLError when it is not valid.

    libyaml words its errors its own way: on an error, the text is composed again with the
    pure-Python parser (only on this path), which says what and where as messages always
    have. A document refused as too large is not composed twice."""
    try:
        return yaml.compose(text, Loader=cast(Any, loader))
    except TooLarge:
        raise
    except yaml.YAMLError:
        if loader is PyLoader:
            raise
        return yaml.compose(text, Loader=cast(Any, PyLoader))
