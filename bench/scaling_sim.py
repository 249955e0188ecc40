"""How many checks move when a replica joins or leaves, by how checks would be assigned to
replicas (docs/scaling.md). A simulation, not a scenario of the bench harness:

    .venv/bin/python -m bench.scaling_sim [--checks 20000] [--replicas 2,3,4,8]

Three ways to give each check an owner among the live replicas:
- `modulo`: hash(check) % len(replicas), the naive one;
- `ring`: a consistent-hash ring with 64 virtual nodes per replica;
- `rendezvous`: highest random weight, each check to the replica with the highest
  hash(check, replica).
For each, it prints the share of checks that change owner when one replica joins or one
leaves (the ideal is 1/N of them), and the busiest replica's load over the mean.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
from collections import Counter
from collections.abc import Callable, Sequence

Assign = Callable[[Sequence[str], Sequence[str]], dict[str, str]]


def _h(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest())


def modulo(checks: Sequence[str], replicas: Sequence[str]) -> dict[str, str]:
    ordered = sorted(replicas)
    return {c: ordered[_h(c) % len(ordered)] for c in checks}


def ring(checks: Sequence[str], replicas: Sequence[str], vnodes: int = 64) -> dict[str, str]:
    points = sorted((_h(r, str(i)), r) for r in replicas for i in range(vnodes))
    keys = [p for p, _ in points]
    return {c: points[bisect.bisect(keys, _h(c)) % len(points)][1] for c in checks}


def rendezvous(checks: Sequence[str], replicas: Sequence[str]) -> dict[str, str]:
    return {c: max(replicas, key=lambda r: _h(c, r)) for c in checks}


SCHEMES: dict[str, Assign] = {"modulo": modulo, "ring": ring, "rendezvous": rendezvous}


def moved(before: dict[str, str], after: dict[str, str]) -> float:
    """The share of checks whose owner changed."""
    return sum(before[c] != after[c] for c in before) / len(before)


def imbalance(owners: dict[str, str]) -> float:
    """The busiest replica's checks over the mean."""
    load = Counter(owners.values())
    return max(load.values()) / (len(owners) / len(load))


def simulate(checks: int, sizes: Sequence[int]) -> list[tuple[str, int, float, float, float]]:
    """(scheme, replicas, moved on a join, moved on a leave, imbalance) per scheme and size."""
    names = [f"check-{i}" for i in range(checks)]
    rows = []
    for scheme, assign in SCHEMES.items():
        for n in sizes:
            replicas = [f"replica-{i}" for i in range(n)]
            now = assign(names, replicas)
            joined = assign(names, [*replicas, f"replica-{n}"])
            left = assign(names, replicas[1:]) if n > 1 else now
            rows.append((scheme, n, moved(now, joined), moved(now, left), imbalance(now)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--replicas", default="2,3,4,8")
    args = parser.parse_args()
    sizes = [int(n) for n in args.replicas.split(",")]
    columns = ["scheme", "replicas", "moved when one joins", "moved when one leaves", "ideal"]
    print("| " + " | ".join([*columns, "busiest / mean"]) + " |")
    print("|---|---|---|---|---|---|")
    for scheme, n, join, leave, worst in simulate(args.checks, sizes):
        ideal = f"{1 / (n + 1):.1%} / {1 / n:.1%}"
        print(f"| {scheme} | {n} | {join:.1%} | {leave:.1%} | {ideal} | {worst:.2f} |")


if __name__ == "__main__":
    main()
