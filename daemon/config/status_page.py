"""The public status page's config (`status_page:`): which components it shows and which checks
tell each one's health. Opt-in: without the section, /status answers 404."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from daemon.config.settings import Name
from daemon.core.units import PositiveDuration, StrictModel

# What the public reads: printable, on one line.
Label = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]+$", max_length=100)]


class StatusComponent(StrictModel):
    """A part of the service as its users know it (the application, the API, the database)."""

    name: Label = Field(description="Its name on the page.")
    checks: list[Name] = Field(
        min_length=1,
        max_length=50,
        description="The checks that tell its health: an open critical incident on one of "
        "them is an outage; another open incident, or a check WARN or CRITICAL, degraded. "
        "Nothing of the checks themselves (values, URLs, hosts) is shown.",
    )


class StatusPageConfig(StrictModel):
    """The public status page at `/status` (and its JSON feed, `/status.json`), readable
    without a token."""

    title: Label = Field(default="Service status", description="The page's title.")
    components: list[StatusComponent] = Field(
        min_length=1, max_length=50, description="The components shown, in this order."
    )
    update_every: PositiveDuration = Field(
        default=1800.0,
        le=86400,
        description="How often an open incident's update is promised (the runbook's 30 "
        "minutes): its `Next update`.",
    )

    def shows(self, check: str) -> bool:
        """An incident on `check` is shown: one of the components names it."""
        return any(check in component.checks for component in self.components)
