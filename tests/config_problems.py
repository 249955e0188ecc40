"""The problems the config loader reports for a text, as the unit tests compare them."""

from __future__ import annotations

import pytest

from daemon.config.loader import load_config_text
from daemon.config.problems import ConfigError


def problems(text: str) -> list[str]:
    """Each problem in `text` (named c.yaml) as the loader words it; the text must have one."""
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "c.yaml")
    return [str(p) for p in info.value.problems]
