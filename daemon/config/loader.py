"""Load and validate the YAML config; every problem names its file, line and YAML path.

Pipeline: read -> compose the YAML node tree (each node keeps its line) -> build plain data,
refusing duplicate keys and interpolating `${ENV}` (reader.py) -> validate with the model of
the types the config names (document.py; errors worded in validation.py) -> check the cross
references (rule -> check, value, remediations). All problems are reported at once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from daemon.config.document import (
    RunbookConfig,
    exposure_problems,
    reference_problems,
    registered_model,
    section_types,
)
from daemon.config.problems import ConfigError, Problem, YamlPath, dotted, line_of
from daemon.config.reader import Reader
from daemon.config.validation import redacted, validation_problems
from daemon.core import plugins
from daemon.core.files import FileRefused, read_regular_file, too_large

# Larger is not a config: refused before parsing (a 50 MB file would take a minute and GBs).
MAX_CONFIG_BYTES = 4 * 1024 * 1024


def _validate(data: dict[str, Any], reader: Reader) -> tuple[RunbookConfig | None, list[Problem]]:
    # Imports only the modules of the types the config names; a name that is not a built-in
    # type loads every type, so an unknown one is reported with all the known ones.
    plugins.load_types(section_types(data, "checks"), section_types(data, "remediations"))
    model = registered_model()
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, validation_problems(exc, model, data, reader)


def load_config_text(text: str, filename: str = "<config>") -> RunbookConfig:
    """Validate config text; raises ConfigError with every problem, sorted by line.

    No credential is repeated in a problem: see `validation.redacted`."""
    if len(text) > MAX_CONFIG_BYTES:
        message = too_large(len(text), MAX_CONFIG_BYTES)
        raise ConfigError([Problem(filename, 0, "file", message)])
    reader = Reader(filename)
    data = reader.read(text)
    problems = reader.problems
    config: RunbookConfig | None = None
    if data is not None:
        config, invalid = _validate(data, reader)
        problems += invalid
        if config is not None:
            crossed = reference_problems(config) + exposure_problems(config)
            problems += [_at(path, message, reader) for path, message in crossed]
    if problems or config is None:
        problems = redacted(problems, data)
        raise ConfigError(sorted(problems, key=lambda problem: problem.line))
    return config


def _at(path: YamlPath, message: str, reader: Reader) -> Problem:
    return Problem(reader.filename, line_of(path, reader.lines), dotted(path), message)


def load_config(path: str | Path) -> RunbookConfig:
    """Read and validate a config file. Blocking: from the event loop, use asyncio.to_thread.

    Only a regular file of at most MAX_CONFIG_BYTES is read (not /dev/zero, nor a FIFO)."""
    filename = str(path)
    try:
        raw = read_regular_file(path, MAX_CONFIG_BYTES)
    except FileRefused as exc:
        raise ConfigError([Problem(filename, 0, "file", str(exc))]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        message = f"not UTF-8 (byte 0x{raw[exc.start]:02x})"
        raise ConfigError([Problem(filename, line, "file", message)]) from None
    return load_config_text(text, filename)


def config_hash(config: RunbookConfig) -> str:
    """sha256 of the validated config as canonical JSON.

    Comments, formatting and key order don't change it; `${ENV}` values do. Secrets enter
    only masked, so the hash may be shown (metrics, timeline) without leaking them.
    """
    data = config.model_dump(mode="json", by_alias=True, serialize_as_any=True)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
