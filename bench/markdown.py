"""`python -m bench.markdown bench/results/latest-quick.json`: the results table as Markdown,
to paste into bench/README.md after a run."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any


def _fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if unit == "x":
        return f"{value:.2f}×"
    if abs(value) >= 100 or float(value).is_integer():
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def table(document: dict[str, Any]) -> str:
    lines = [
        "| scenario | figure | runbookd | peer | ratio | target | met | note |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    for r in document["rows"]:
        peer = f"{_fmt(r['peer'], r['unit'])} ({r['peer_name']})" if r["peer"] is not None else "–"
        met = {True: "yes", False: "**no**", None: ""}[r["passed"]]
        cells = [
            r["scenario"],
            r["figure"],
            _fmt(r["runbookd"], r["unit"]),
            peer,
            _fmt(r["ratio"], "x"),
            r["target"],
            met,
            r["note"],
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    host = document["host"]
    before, after = host["load_before"], host["load_after"]
    lines.append("")
    lines.append(
        f"{document['mode']} mode, {document['timestamp']}, {document['duration_s']:.0f} s; "
        f"commit {host.get('git', {}).get('commit', '?')}; load average {before['load1']:.2f} "
        f"before, {after['load1']:.2f} after, on {before['cpus']} CPUs; {host['event_loop']}, "
        f"Python {host['python']}, aiohttp {host['aiohttp']}."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(table(json.loads(Path(path).read_text())))
        print()
