"""The operator API's request bodies and bounds, read by its handlers and by the OpenAPI
document."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from daemon.core.units import StrictModel, parse_duration, parse_time
from daemon.deploys.models import Kind

MAX_LIMIT = 1000
MAX_SILENCE = 90 * 86400.0
# A silence starts at most this far ahead: a maintenance window is planned weeks ahead, not
# years (a start in 2300 would be a silence nobody sees end, and never pruned).
MAX_AHEAD = 90 * 86400.0
# Printable text on one line: it goes to Slack, the timeline, the audit and terminals.
_ONE_LINE = r"^[^\x00-\x1f\x7f]+$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(text: str) -> str:
    if _CONTROL.search(text):
        raise ValueError("must be one line of printable text (no control characters)")
    return text


def _bounds(max_length: int) -> Any:
    """1..max_length characters; the pattern documents what `_one_line` checks."""
    return Field(min_length=1, max_length=max_length, json_schema_extra={"pattern": _ONE_LINE})


_PRINTABLE = AfterValidator(_one_line)
# Who acts, as the timeline and the audit name them; a version, a commit.
Name = Annotated[str, _bounds(200), _PRINTABLE]
Environment = Annotated[str, _bounds(64), _PRINTABLE]


class Who(StrictModel):
    """Who acts, and why: both land on the incident's timeline."""

    by: Name
    reason: str = Field(default="", max_length=2000)


# A time in a request body: a number or an ISO text in, epoch seconds out.
Time = Annotated[float, BeforeValidator(parse_time, json_schema_input_type=float | str)]


class SilenceBody(StrictModel):
    created_by: Name
    comment: str = Field(min_length=1, max_length=2000)
    rule: str | None = None
    check: str | None = None
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)
    # At most MAX_AHEAD from now (the handler checks: the model has no clock).
    starts_at: Time | None = None
    # Either an end time or a duration from the start ("2h"): a silence always ends.
    ends_at: Time | None = None
    duration: str | None = None

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _bounded(self) -> SilenceBody:
        if self.rule is None and self.check is None and not self.labels:
            raise ValueError("a silence needs a matcher: rule, check or labels")
        if (self.ends_at is None) == (self.duration is None):
            raise ValueError("give ends_at or duration (a silence always ends)")
        return self

    def window(self, now: float) -> tuple[float, float]:
        start = self.starts_at if self.starts_at is not None else now
        end = self.ends_at if self.ends_at is not None else start + parse_duration(self.duration)
        return start, end


class DeployBody(StrictModel):
    """A deploy, as CI announces it (`runbookd deploy announce`)."""

    version: Name
    environment: Environment
    kind: Kind = "standard"
    commit: Name | None = None
    by: Name | None = None


class RunBody(StrictModel):
    """A procedure's run, as `runbookd procedure run` asks for it."""

    params: dict[str, str] = Field(default_factory=dict, max_length=32)
    by: Name
