"""The simulation behind docs/scaling.md: rendezvous hashing moves about the ideal share of
checks when a replica joins or leaves, and modulo hashing moves most of them."""

from __future__ import annotations

import pytest

from bench.scaling_sim import simulate


def test_rendezvous_moves_the_ideal_share_and_modulo_does_not() -> None:
    rows = {
        (scheme, n): (join, leave, worst) for scheme, n, join, leave, worst in simulate(4000, [4])
    }
    join, leave, worst = rows["rendezvous", 4]
    assert join == pytest.approx(1 / 5, abs=0.03)
    assert leave == pytest.approx(1 / 4, abs=0.03)
    assert worst < 1.1
    assert rows["modulo", 4][0] > 0.6  # most checks move
