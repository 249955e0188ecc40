"""README.md against the code it describes: the quick start's config is the file shipped in
config/examples/ and loads as the README says; the HTTP API table names every route and every
body field the handlers validate; the status page's section names every path the page loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from daemon.api.routes import OPERATIONS, Operation
from daemon.config.loader import load_config
from tests.examples import FOLDER, write_credentials
from tests.paths import ROOT

README = (ROOT / "README.md").read_text()
QUICKSTART = FOLDER / "quickstart.yaml"
API = [op for op in OPERATIONS if op.tag != "ui"]


def section(heading: str) -> str:
    """The README's text from a heading to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = README.index(f"\n{heading}\n")
    end = re.compile(rf"\n#{{1,{len(level)}}} ").search(README, start + len(heading) + 2)
    return README[start : end.start() if end else len(README)]


def test_the_quick_start_shows_the_shipped_config_file() -> None:
    text = QUICKSTART.read_text()
    body = text[text.index("runbookd:\n") :]  # the file without its opening comment
    assert f"```yaml\n{body}```" in section("## Quick start")
    assert "(config/examples/quickstart.yaml)" in section("## Quick start")


def test_the_quick_start_config_is_what_the_readme_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(write_credentials(tmp_path)))
    monkeypatch.delenv("APP_URL", raising=False)
    monkeypatch.delenv("PAGE_WEBHOOK_URL", raising=False)
    config = load_config(QUICKSTART)
    assert config.runbookd.listen == "127.0.0.1:9464"
    assert {token.scope for token in config.runbookd.api.tokens} == {"read", "write"}
    [(name, check)] = config.checks.items()
    assert check.type == "http"
    assert str(getattr(check, "url", "")).startswith("http://127.0.0.1:3000/")
    [rule] = config.rules.values()
    [page] = rule.do
    remediation = config.remediations[page]
    assert remediation.type == "http"
    assert getattr(remediation, "notifier", False) is True
    assert str(getattr(remediation, "url", "")).startswith("http://127.0.0.1:8080/")
    assert config.status_page is not None
    assert [c.checks for c in config.status_page.components] == [[name]]


def table_rows() -> list[str]:
    return [line for line in section("### The HTTP API").splitlines() if line.startswith("| `")]


@pytest.mark.parametrize("op", API, ids=lambda op: f"{op.method.upper()} {op.path}")
def test_the_api_table_names_the_route_and_its_body_fields(op: Operation) -> None:
    route = f"`{op.method.upper()} {op.path}`"
    rows = [row for row in table_rows() if route in row]
    assert len(rows) == 1, f"{route}: {len(rows)} rows of the README's API table name it"
    # The operator's bodies (Alertmanager's and Grafana's are theirs, documented by them).
    if not (isinstance(op.body, type) and issubclass(op.body, BaseModel)):
        return
    if op.body.__module__ != "daemon.api.schemas":
        return
    # The row's second cell lists the body's fields: `name` if required, `name?` if not.
    fields = rows[0].split(" | ")[1]
    for name, field in op.body.model_fields.items():
        written = f"`{name}`" if field.is_required() else f"`{name}?`"
        assert written in fields, f"{route}: the body field {written} is not in {fields!r}"


def test_the_status_page_section_names_every_path_the_page_loads() -> None:
    template = (ROOT / "daemon" / "ui" / "templates" / "status.html").read_text()
    loaded = set(re.findall(r'(?:href|src)="(/[^"]*)"', template))
    assert "/ui/static/console.css" in loaded  # the pattern finds what it should
    text = section("### The console and the status page")
    for path in loaded | {"/status"}:
        assert f"`{path}`" in text, f"the status page loads {path}: the README does not say"
        assert f"location = {path} " in text, f"the nginx example does not forward {path}"
    # "/ui/static/ holds only ...": every file there, named.
    static = sorted(p.name for p in (ROOT / "daemon" / "ui" / "static").iterdir())
    listed = ", ".join(f"`{name}`" for name in static[:-1]) + f" and `{static[-1]}`"
    assert f"static files, {listed}, no data" in " ".join(text.split())
