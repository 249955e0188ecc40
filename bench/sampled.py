"""`runbookd` with an in-process stack sampler of its main thread (for bench/intake_profile.py).

py-spy sees nothing below uvloop's `Runner.run` on this Python, so the daemon samples itself:
a thread reads the main thread's stack every `RUNBOOKD_SAMPLE_EVERY` seconds (default 2 ms)
through `sys._current_frames` while the file `<RUNBOOKD_SAMPLE>.start` exists and
`<RUNBOOKD_SAMPLE>.stop` does not, then writes the stacks, collapsed (`frame;frame;... count`,
outermost first), to `<RUNBOOKD_SAMPLE>`, and the garbage collections of that time (count,
total and longest pause per generation, from `gc.callbacks`) to `<RUNBOOKD_SAMPLE>.gc.json`.
The switch interval is cut to 0.1 ms so that the sampler gets the GIL while the loop is busy;
this costs the daemon a little, the same before and after a change. Time spent in C or Rust
(pydantic-core, the JSON encoder) is counted to the next Python frame to run, where the
interpreter lets go of the GIL: a Python validator called by pydantic carries the parse
before it.

Run as a script with any project's interpreter (it imports nothing from bench/), so the same
sampler measures another worktree's daemon: `OTHER/.venv/bin/python bench/sampled.py run
--config ...` with OTHER as the working directory.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path


def _frames(frame: object) -> str:
    names: list[str] = []
    f = frame
    while f is not None:
        code = f.f_code  # type: ignore[attr-defined]
        names.append(f"{code.co_filename}:{code.co_qualname}")
        f = f.f_back  # type: ignore[attr-defined]
    return ";".join(reversed(names))


def _sample(out: Path, every: float, main_id: int) -> None:
    start, stop = Path(f"{out}.start"), Path(f"{out}.stop")
    while not start.exists():
        time.sleep(0.02)
    stacks: collections.Counter[str] = collections.Counter()
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    began = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - began[0])

    gc.callbacks.append(on_gc)
    while not stop.exists():
        frame = sys._current_frames().get(main_id)
        if frame is not None:
            stacks[_frames(frame)] += 1
        time.sleep(every)
    gc.callbacks.remove(on_gc)
    summary = {
        f"gen{g}": {"count": len(p), "total_ms": 1e3 * sum(p), "max_ms": 1e3 * max(p, default=0)}
        for g, p in pauses.items()
    }
    Path(f"{out}.gc.json").write_text(json.dumps(summary))
    tmp = Path(f"{out}.tmp")
    tmp.write_text("".join(f"{stack} {n}\n" for stack, n in stacks.items()))
    tmp.rename(out)


def main() -> int:
    target = os.environ.get("RUNBOOKD_SAMPLE")
    if target:
        sys.setswitchinterval(0.0001)
        every = float(os.environ.get("RUNBOOKD_SAMPLE_EVERY", "0.002"))
        main_id = threading.main_thread().ident
        assert main_id is not None
        args = (Path(target), every, main_id)
        threading.Thread(target=_sample, args=args, daemon=True, name="sampler").start()
    sys.path.insert(0, os.getcwd())  # the worktree whose daemon runs (script mode put bench/)
    from daemon.cli.main import main as runbookd

    sys.argv[0] = "runbookd"
    result: int = runbookd()
    return result


if __name__ == "__main__":
    sys.exit(main())
