"""Generic webhooks without a server: field paths, status words, and the config."""

from __future__ import annotations

import pytest

from daemon.engine.alerts import alert_from_json
from tests.config_problems import problems

SECRET = "hmac-0123456789abcdef"
HOOK_TOKEN = "hook-0123456789abcdef"


@pytest.fixture(autouse=True)
def hook_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOKD_TEST_HOOK_TOKEN", HOOK_TOKEN)


# -- mapping and config --------------------------------------------------------------------------


def test_paths_step_into_lists_and_statuses_read_as_words() -> None:
    paths = {"name": "alerts.0.name", "status": "alerts.0.firing", "labels.env": "meta.env"}
    doc = {"alerts": [{"name": "DiskFull", "firing": True}], "meta": {"env": 3}}
    alert = alert_from_json(doc, paths, "webhook:x")
    assert (alert.name, alert.firing, alert.labels) == (
        "DiskFull",
        True,
        {
            "alertname": "DiskFull",
            "env": "3",
        },
    )
    assert alert.source == "webhook:x"
    doc["alerts"][0]["firing"] = "RESOLVED"  # type: ignore[index]
    assert not alert_from_json(doc, paths, "webhook:x").firing
    with pytest.raises(ValueError, match=r"^alerts\.0\.name: not found"):
        alert_from_json({"alerts": []}, paths, "webhook:x")


@pytest.mark.parametrize(
    ("status", "firing"),
    [("alerting", True), ("DOWN", True), (True, True), ("ok", False), ("Resolved", False)],
)
def test_status_words_read_as_firing_or_resolved(status: object, firing: bool) -> None:
    doc = {"name": "DiskFull", "status": status}
    assert alert_from_json(doc, {"name": "name", "status": "status"}, "webhook:x").firing is firing


@pytest.mark.parametrize("status", ["banana", "resolvd", 1, 0, ""])
def test_a_status_neither_firing_nor_resolved_is_refused(status: object) -> None:
    """A typo or a number whose meaning differs by sender (0 is down for one, up for
    another) must not resolve an incident: the request is refused, naming the path."""
    doc = {"name": "DiskFull", "status": status}
    with pytest.raises(ValueError, match=r"^status: .* is neither firing \(.*\) nor resolved"):
        alert_from_json(doc, {"name": "name", "status": "status"}, "webhook:x")


def test_webhook_config_is_validated_with_lines() -> None:
    text = f"""\
webhooks:
  a:
    fields: {{name: title}}
    auth: {{hmac_secret: {SECRET}}}
  b:
    fields: {{name: title, status: state, labels.alertname: x}}
    auth: {{token: {HOOK_TOKEN}}}
  c:
    fields: {{name: title, status: state, severity: level}}
    auth: {{hmac_secret: s3cr3t}}
  d:
    fields:
      name: title
      status: "state..x"
    auth: {{hmac_secret: {SECRET}, tolerance: 2h}}
  bad name:
    fields: {{name: title, status: state}}
    auth: {{}}
"""
    assert problems(text) == [
        "c.yaml:3 webhooks.a.fields: needs status",
        "c.yaml:6 webhooks.b.fields: labels.alertname: the alert name comes from `name`",
        "c.yaml:9 webhooks.c.fields: unknown field 'severity' (known: name, status, "
        "fingerprint, summary or labels.<label>)",
        "c.yaml:10 webhooks.c.auth.hmac_secret: too short: use at least 16 characters",
        "c.yaml:14 webhooks.d.fields.status: not a dotted path into the body: 'state..x' "
        "(e.g. alert.title)",
        "c.yaml:15 webhooks.d.auth.tolerance: must be at most 1h, not 2h",
        "c.yaml:16 webhooks.bad name: not a valid name: 'bad name' (letters, digits, _ and -, "
        "starting with a letter or _, at most 64 characters)",
        "c.yaml:18 webhooks.bad name.auth: give hmac_secret (or hmac_secret_file) or token, "
        "exactly one",
    ]


def test_webhook_auth_is_one_method() -> None:
    both = f"""\
webhooks:
  d:
    fields: {{name: t, status: s}}
    auth: {{token: {HOOK_TOKEN}, hmac_secret: {SECRET}}}
"""
    assert problems(both) == [
        "c.yaml:4 webhooks.d.auth: give hmac_secret (or hmac_secret_file) or token, exactly one"
    ]
