"""The operator API's request models: times out of range are refused before they are floats."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from daemon.api.schemas import SilenceBody

OUT_OF_RANGE = "Value error, a time must lie between 2000-01-01 and 2100-01-01 (UTC)"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400, 1e19, 946684799])
def test_a_time_out_of_range_is_refused_before_it_is_a_float(value: float) -> None:
    body = {"created_by": "a", "comment": "c", "rule": "down", "duration": "1h"}
    with pytest.raises(ValidationError) as info:
        SilenceBody.model_validate(body | {"starts_at": value})
    [error] = info.value.errors()
    assert (error["loc"], error["msg"]) == (("starts_at",), OUT_OF_RANGE)
