"""The daemon on a PostgreSQL store (`runbookd.store: {type: postgres}`): alerts open an
incident, the remediation runs once, and a restarted daemon finds it all in the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from daemon.store.postgres.repository import PostgresStore
from daemon.store.protocol import Store
from tests.integration.test_alerts import alert, webhook
from tests.pg import Database, fresh_database
from tests.utils import run_daemon, wait_for

CONFIG = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  store: {{type: postgres, dsn_file: {dsn_file}{store_extra}}}
rules:
  errors:
    when: {{alert: HighErrorRate, labels: {{service: web}}}}
    do: [hook]
remediations:
  hook:
    type: http
    url: {url}/hook
    body: {{incident: "{{{{ incident.id }}}}"}}
"""


@pytest.fixture
async def database() -> AsyncIterator[Database]:
    async with fresh_database() as database:
        yield database


def config(directory: Path, database: Database, url: str, store_extra: str = "") -> Path:
    """A daemon on `database` acting on HighErrorRate alerts through `url`/hook; its config,
    DSN file and state in `directory`. `store_extra`: more keys of runbookd.store."""
    directory.mkdir(exist_ok=True)
    dsn_file = directory / "dsn"
    dsn_file.write_text(database.dsn + "\n")
    path = directory / "runbookd.yaml"
    text = CONFIG.format(
        state=directory / "state", dsn_file=dsn_file, url=url, store_extra=store_extra
    )
    path.write_text(text)
    return path


async def test_a_daemon_on_postgres_acts_once_and_remembers_across_a_restart(
    tmp_path: Path,
    database: Database,
    app_state: tuple[dict[str, object], str],
    session: aiohttp.ClientSession,
) -> None:
    state, url = app_state
    path = config(tmp_path, database, url)
    async with run_daemon(path) as daemon:
        store: Store = daemon.store
        assert isinstance(store, PostgresStore)
        api = f"http://127.0.0.1:{daemon.port}/api/v1/alerts"
        for _ in range(2):  # Alertmanager repeats itself: one incident, one action
            async with session.post(api, json=webhook(alert())) as r:
                assert (r.status, await r.json()) == (200, {"received": 1, "matched": 1})
        await wait_for(lambda: bool(state.get("hooks")) and not daemon.pipeline.busy)
        (incident,) = daemon.engine.incidents.values()
    # No state directory was needed: everything is in the database.
    assert not (tmp_path / "state").exists()

    async with run_daemon(path) as restarted:
        assert [i.id for i in restarted.engine.incidents.values()] == [incident.id]  # restored
        api = f"http://127.0.0.1:{restarted.port}/api/v1/alerts"
        async with session.post(api, json=webhook(alert("resolved"))) as r:
            assert r.status == 200
        await wait_for(lambda: not restarted.engine.incidents)
        stored = await restarted.store.get_incident(incident.id)
        assert stored is not None
        assert stored.resolved_at is not None
        kinds = [e.kind for e in stored.timeline]
        assert kinds[0] == "opened"
        assert kinds.count("action") == 1
        assert "resolved" in kinds
        assert len(await restarted.store.running_actions()) == 0
    assert len(state["hooks"]) == 1  # type: ignore[arg-type]
