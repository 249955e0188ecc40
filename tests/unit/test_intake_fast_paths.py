"""The intake's shortcuts agree with the general code they skip: the answer to alerts taken
is what json_response writes, and `AlertmanagerWebhook.to_alerts`'s loop for alerts within the
bounds makes what `WebhookAlert.to_alert` makes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.api.bodies import json_response
from daemon.api.intake import taken
from daemon.engine.alerts import MAX_KEY, MAX_LABELS, MAX_TEXT, AlertmanagerWebhook, group_digest


@pytest.mark.parametrize(
    ("received", "matched"), [(0, 0), (1, 0), (1, 1), (10, 2), (10_000, 9_999)]
)
def test_the_prebuilt_answer_is_json_responses(received: int, matched: int) -> None:
    fast = taken(received, matched)
    general = json_response({"received": received, "matched": matched})
    assert (fast.status, fast.body) == (general.status, general.body)
    assert fast.headers["Content-Type"] == general.headers["Content-Type"]
    assert (fast.content_type, fast.charset) == ("application/json", "utf-8")


# Keys and values at and around the bounds, and label sets around MAX_LABELS.
texts = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["a" * MAX_KEY, "b" * (MAX_KEY + 1), "c" * MAX_TEXT, "d" * (MAX_TEXT + 1)]),
)
label_sets = st.one_of(
    st.dictionaries(texts, texts, max_size=6),
    st.builds(
        lambda n, extra: {f"k{i}": "v" for i in range(n)} | extra,
        st.integers(MAX_LABELS - 1, MAX_LABELS + 2),
        st.dictionaries(st.sampled_from(["alertname", "zz"]), texts, max_size=2),
    ),
)
times = st.sampled_from([None, "2026-01-01T00:00:00Z", "0001-01-01T00:00:00Z"])
alerts = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["firing", "resolved"]),
        "labels": label_sets,
        "annotations": st.one_of(st.none(), label_sets),
        "startsAt": times,
        "endsAt": times,
        "generatorURL": st.sampled_from(["", "http://x/graph", "g" * (MAX_TEXT + 3)]),
        "fingerprint": st.sampled_from(["", "0123456789abcdef", "f" * (MAX_KEY + 5)]),
    }
)


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(alerts, max_size=4),
    group_key=st.sampled_from(["", '{}:{job="x"}']),
    group_labels=st.one_of(st.none(), st.just({"alertname": "FromGroup"})),
    common=st.one_of(st.none(), st.just({"alertname": "FromCommon"})),
    version=st.sampled_from(["4", "1"]),
    truncated=st.integers(0, 3),
)
def test_to_alerts_is_each_alerts_to_alert(
    items: list[dict[str, Any]],
    group_key: str,
    group_labels: dict[str, str] | None,
    common: dict[str, str] | None,
    version: str,
    truncated: int,
) -> None:
    body = AlertmanagerWebhook.model_validate(
        {
            "version": version,
            "status": "firing",
            "groupKey": group_key,
            "truncatedAlerts": truncated,
            "groupLabels": group_labels,
            "commonLabels": common,
            "alerts": items,
        }
    )
    default = (group_labels or {}).get("alertname") or (common or {}).get("alertname", "")
    source = "grafana" if version == "1" else "alertmanager"
    group = group_digest(group_key) if group_key else ""
    expected = [
        a.to_alert(source, default_name=default, group=group, truncated=truncated)
        for a in body.alerts
    ]
    assert body.to_alerts() == expected
