"""The whole config document: its model, built from the registered types, and the checks
across its sections (rule -> check, value and remediations; an open API on the network).

`checks` and `remediations` are discriminated unions on `type` of the types the config
names (of every registered type when one is unknown, so messages list them all).
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import Annotated, Any, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, field_validator

from checks.base import CHECKS, CheckConfig
from daemon.config.problems import YamlPath
from daemon.config.settings import DaemonSettings, Name, is_loopback
from daemon.config.status_page import StatusPageConfig
from daemon.config.webhooks import WebhookConfig
from daemon.core import plugins
from daemon.core.units import StrictModel
from daemon.deploys.config import DeploysConfig, split_ref
from daemon.jobs.config import VALUE_NAMES as JOB_VALUES
from daemon.jobs.config import JobConfig
from daemon.procedures.config import ProcedureConfig
from daemon.rules.config import RuleConfig
from remediations.base import REMEDIATIONS, RemediationConfig, can_announce


class RunbookConfig(StrictModel):
    """The static type of a loaded config. `config_model()` gives the class that validates."""

    # Never validates itself: its validator would only cost time and memory at import.
    # The classes `_build_model` derives from it build theirs on first use.
    model_config = ConfigDict(defer_build=True)

    runbookd: DaemonSettings = Field(
        default=DaemonSettings(),
        description="The daemon's own settings: listen address, state, budget, API, alert caps.",
    )
    checks: dict[Name, CheckConfig] = Field(
        default_factory=dict,
        description="What to measure. Each entry is a check, named by its key (letters, "
        "digits, `_` and `-`), with a `type:` and its own `interval`; it reports a status "
        "(OK, WARN, CRITICAL, UNKNOWN) and named values that rules compare "
        "(`CHECK.VALUE`). A check that cannot measure reports UNKNOWN, never a bad value.",
    )
    remediations: dict[Name, RemediationConfig] = Field(
        default_factory=dict,
        description="What to do. Each entry is an action, named by its key, with a `type:`; "
        "rules name them in `do:`, `escalate:` and `on_blind:`. Every run passes the safety "
        "envelope first: dry-run, silences, the circuit breaker, the global budget, the "
        "`cooldown`, `max_runs`, approval, and one plan at a time per `target`.",
    )
    rules: dict[Name, RuleConfig] = Field(
        default_factory=dict,
        description="When to act. Each entry is a rule, named by its key: on a check's value, "
        "or on alerts pushed by Alertmanager, Grafana or a webhook.",
    )
    webhooks: dict[Name, WebhookConfig] = Field(
        default_factory=dict,
        description="Senders of any JSON: `POST /api/v1/webhooks/NAME` maps its body to alerts "
        "by dotted paths, for rules on alerts.",
    )
    jobs: dict[Name, JobConfig] = Field(
        default_factory=dict,
        description="Scheduled work. Each entry runs one of the `remediations:` on a cron "
        "schedule (a backup, a restore drill, maintenance), one run at a time; every run is "
        "recorded, and `JOB.failed` is a value rules can page on.",
    )

    procedures: dict[Name, ProcedureConfig] = Field(
        default_factory=dict,
        description="The runbook's procedures (a migration, a rollback, a restore): steps run "
        "in order on request (`runbookd procedure run NAME`), each gated and recorded, "
        "undone where a later one fails.",
    )
    deploys: DeploysConfig | None = Field(
        None,
        description="Deploys watched: each deploy (from CI, Vercel's webhooks or a changed "
        "check value) is announced, watched against the values before it, and rolled back "
        'when it breaks what the runbook\'s "Rollback if" names.',
    )
    status_page: StatusPageConfig | None = Field(
        None,
        description="A public status page at `/status`: components from the checks and open "
        "incidents, no internal values. Unset: no status page.",
    )

    @field_validator(
        "runbookd",
        "checks",
        "remediations",
        "rules",
        "webhooks",
        "jobs",
        "procedures",
        mode="before",
    )
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        # `checks:` with every entry commented out is an empty section, not an error.
        return {} if value is None else value


def _tagged_union(models: tuple[type[BaseModel], ...], kind: str) -> Any:
    if not models:

        def refuse(value: Any) -> Any:
            raise ValueError(f"no {kind} types are registered")

        return Annotated[Any, BeforeValidator(refuse)]
    # Union[tuple] unpacks a runtime tuple; the `X | Y` form ruff suggests cannot.
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007


@functools.cache
def _build_model(
    check_models: tuple[type[BaseModel], ...], remediation_models: tuple[type[BaseModel], ...]
) -> type[RunbookConfig]:
    # Built at runtime, so typed Any: static code sees RunbookConfig.
    checks: Any = dict[Name, _tagged_union(check_models, "check")]  # type: ignore[misc]
    remediations: Any = dict[Name, _tagged_union(remediation_models, "remediation")]  # type: ignore[misc]
    return create_model(
        "RunbookConfig",
        __base__=RunbookConfig,
        __module__=__name__,
        checks=(checks, Field(default_factory=dict)),
        remediations=(remediations, Field(default_factory=dict)),
    )


def config_model() -> type[RunbookConfig]:
    """The validating model for every type, built-in or plugin (cached per set of types)."""
    plugins.load()
    return registered_model()


def registered_model() -> type[RunbookConfig]:
    """The validating model for the types registered so far (no plugin is loaded)."""
    return _build_model(tuple(CHECKS.config_models()), tuple(REMEDIATIONS.config_models()))


def section_types(data: dict[str, Any], section: str) -> list[object]:
    """The `type:` of each entry of a section, as written (None where there is none)."""
    entries = data.get(section)
    if not isinstance(entries, dict):
        return []
    return [entry.get("type") if isinstance(entry, dict) else None for entry in entries.values()]


def _listing(names: Collection[str]) -> str:
    return f"available: {', '.join(sorted(names))}" if names else "none defined"


def _notifies(config: RemediationConfig) -> bool:
    """A notifier by its type (pagerduty, slack) or by its config (`notifier: true`)."""
    return bool(getattr(config, "notifier", False) or REMEDIATIONS.get(config.type).notifier)


def reference_problems(config: RunbookConfig) -> list[tuple[YamlPath, str]]:
    """Names a rule uses that the config does not define, as (path, message)."""
    found: list[tuple[YamlPath, str]] = []
    for name, rule in config.rules.items():
        if rule.alert_match is not None:
            continue  # a rule on alerts names no check
        check_name, value = rule.condition.check, rule.condition.value
        check = config.checks.get(check_name)
        if check is None and check_name in config.jobs:
            if value not in JOB_VALUES:
                message = f"job {check_name!r} has no value {value!r} ({_listing(JOB_VALUES)})"
                found.append((("rules", name, "when"), message))
        elif check is None:
            defined = _listing({*config.checks, *config.jobs})
            kinds = "check or job" if config.jobs else "check"
            message = f"no {kinds} named {check_name!r} ({defined})"
            found.append((("rules", name, "when"), message))
        elif (values := check.value_names()) is not None and value not in values:
            message = f"check {check_name!r} has no value {value!r} ({_listing(values)})"
            found.append((("rules", name, "when"), message))
        for section in ("do", "escalate", "on_blind"):
            for index, action in enumerate(getattr(rule, section)):
                if action not in config.remediations:
                    defined = _listing(config.remediations)
                    message = f"no remediation named {action!r} ({defined})"
                    found.append((("rules", name, section, index), message))
                elif section == "on_blind" and not _notifies(config.remediations[action]):
                    message = (
                        f"{action!r} is not a notifier: being blind only ever pages (use a "
                        "pagerduty or slack remediation, or a command or http one with "
                        "`notifier: true`)"
                    )
                    found.append((("rules", name, section, index), message))
    for name, job in config.jobs.items():
        if job.run not in config.remediations:
            message = f"no remediation named {job.run!r} ({_listing(config.remediations)})"
            found.append((("jobs", name, "run"), message))
        if name in config.checks:
            message = f"{name!r} is a check too: rules could not tell their values apart"
            found.append((("jobs", name), message))
    if config.deploys is not None:
        found += _deploy_problems(config, config.deploys)
    for name, procedure in config.procedures.items():
        found += _procedure_problems(config, name, procedure)
    if config.status_page is not None:
        for i, component in enumerate(config.status_page.components):
            for j, needed in enumerate(component.checks):
                if needed not in config.checks:
                    message = f"no check named {needed!r} ({_listing(config.checks)})"
                    found.append((("status_page", "components", i, "checks", j), message))
    return found


def _procedure_problems(
    config: RunbookConfig, name: str, procedure: ProcedureConfig
) -> list[tuple[YamlPath, str]]:
    """What a procedure names that the config does not define."""
    sections: dict[str, Collection[str]] = {
        "run": config.remediations,
        "job": config.jobs,
        "wait_for": config.checks,
    }
    kinds = {"run": "remediation", "job": "job", "wait_for": "check"}
    found: list[tuple[YamlPath, str]] = []

    def need(where: YamlPath, kind: str, ref: str) -> None:
        defined = sections[kind]
        if ref not in defined:
            found.append((where, f"no {kinds[kind]} named {ref!r} ({_listing(defined)})"))

    base: YamlPath = ("procedures", name)
    for index, check in enumerate(procedure.preconditions):
        need((*base, "preconditions", index), "wait_for", check)
    for index, step in enumerate(procedure.steps):
        if step.kind != "approval":
            need((*base, "steps", index, step.kind), step.kind, step.target)
        for position, action in enumerate(step.undo):
            need((*base, "steps", index, "undo", position), "run", action)
    for index, action in enumerate(procedure.on_failure):
        need((*base, "on_failure", index), "run", action)
    return found


def _deploy_problems(config: RunbookConfig, deploys: DeploysConfig) -> list[tuple[YamlPath, str]]:
    """What `deploys:` names that the config does not have, or that cannot do its part."""
    found: list[tuple[YamlPath, str]] = []

    def at(where: str) -> YamlPath:
        return ("deploys", *(int(p) if p.isdigit() else p for p in where.split(".")))

    refs = {"version_from": deploys.version_from}
    for key in ("error_ratio", "p95"):
        limit = getattr(deploys.rollback_if, key)
        refs[f"rollback_if.{key}.value"] = limit.value if limit is not None else None
    for where, check_name in deploys.checks():
        check = config.checks.get(check_name)
        if check is None:
            message = f"no check named {check_name!r} ({_listing(config.checks)})"
            found.append((at(where), message))
            continue
        ref = refs.get(where)
        value = split_ref(ref)[1] if ref is not None else "up"
        if (values := check.value_names()) is not None and value not in values:
            message = f"check {check_name!r} has no value {value!r} ({_listing(values)})"
            found.append((at(where), message))
    remediations = config.remediations
    rollback = remediations.get(deploys.rollback)
    if rollback is None:
        message = f"no remediation named {deploys.rollback!r} ({_listing(remediations)})"
        found.append((at("rollback"), message))
    elif _notifies(rollback):
        found.append((at("rollback"), f"{deploys.rollback!r} is a notifier: it cannot roll back"))
    for section in ("announce", "page"):
        for index, name in enumerate(getattr(deploys, section)):
            entry = remediations.get(name)
            if entry is None:
                message = f"no remediation named {name!r} ({_listing(remediations)})"
            elif section == "announce" and not can_announce(REMEDIATIONS.get(entry.type)):
                message = f"{name!r} ({entry.type}) cannot post announcements (slack can)"
            elif section == "page" and not _notifies(entry):
                message = f"{name!r} is not a notifier: `page` only ever pages"
            else:
                continue
            found.append((at(f"{section}.{index}"), message))
    return found


def exposure_problems(config: RunbookConfig) -> list[tuple[YamlPath, str]]:
    """An API reachable from the network must not be open: it can approve remediations."""
    settings = config.runbookd
    host = settings.listen_address[0]
    if settings.api.tokens or is_loopback(host):
        return []
    path: YamlPath = ("runbookd", "listen")
    message = (
        f"{host} is not a loopback address, so runbookd.api.tokens must list at least one "
        "token (or listen on 127.0.0.1)"
    )
    return [(path, message)]
