"""A check's recent values as a small inline SVG, drawn on the server: no script, no chart
library, and the page's CSP allows it. A run without a value is a gap in the line, never a
dip to zero; a lone point between gaps is a dot."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup

WIDTH, HEIGHT, PAD = 90, 18, 2


def sparkline(values: Sequence[float | None], label: str) -> Markup:
    known = [v for v in values if v is not None]
    if not known:
        return Markup("")
    low, high = min(known), max(known)
    span = (high - low) or 1.0
    step = WIDTH / max(len(values) - 1, 1)
    scale = (HEIGHT - 2 * PAD) / span
    runs: list[list[str]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            if runs[-1]:
                runs.append([])
            continue
        y = HEIGHT - PAD - (v - low) * scale if high != low else HEIGHT / 2
        runs[-1].append(f"{i * step:.1f},{y:.1f}")
    shapes = []
    for run in runs:
        if len(run) > 1:
            shapes.append(Markup('<polyline points="{}"/>').format(" ".join(run)))
        elif run:
            cx, cy = run[0].split(",")
            shapes.append(Markup('<circle cx="{}" cy="{}" r="1.2"/>').format(cx, cy))
    title = f"{label}: {low:.4g} to {high:.4g}, last {len(values)} runs"
    return Markup(
        '<svg class="spark" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"'
        ' aria-label="{t}"><title>{t}</title>{shapes}</svg>'
    ).format(w=WIDTH, h=HEIGHT, t=title, shapes=Markup("").join(shapes))
