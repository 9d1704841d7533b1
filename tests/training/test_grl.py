"""The gradient reversal's strength over training: ``grl_schedule_lambda`` and its checks."""

from __future__ import annotations

import numpy as np
import pytest

from nnunet_transfer.training.grl import check_grl_schedule, ganin_lambda, grl_schedule_lambda

PROGRESS = np.linspace(0.0, 1.0, 101)


@pytest.mark.parametrize("gamma", [10.0, 3.0, 1000.0])
def test_ganin_without_delay_is_todays_schedule_bitwise(gamma):
    assert [grl_schedule_lambda(p, "ganin", gamma) for p in PROGRESS] == [ganin_lambda(p, gamma) for p in PROGRESS]
    assert grl_schedule_lambda(0.0) == 0.0 and grl_schedule_lambda(1.0) == pytest.approx(1.0, abs=1e-4)
    assert grl_schedule_lambda(-0.5) == 0.0 and grl_schedule_lambda(2.0) == grl_schedule_lambda(1.0)  # clipped


def test_ganin_with_delay_and_max_runs_over_the_rest_of_training():
    values = [grl_schedule_lambda(p, "ganin", 10.0, 0.5, delay=0.2) for p in PROGRESS]
    assert values[:20] == [0.0] * 20  # p < 0.2
    assert values[60] == pytest.approx(0.5 * ganin_lambda(0.5))  # halfway through the remaining 80 %
    assert max(values) == pytest.approx(0.5, abs=1e-4) and np.all(np.diff(values) >= 0)


def test_linear_with_delay_and_ramp():
    lam = [grl_schedule_lambda(p, "linear", max_lambda=2.0, delay=0.1, ramp=0.4) for p in PROGRESS]
    assert lam[:11] == [0.0] * 11
    assert lam[30] == pytest.approx(2.0 * 0.2 / 0.4)
    assert np.allclose(np.diff(lam[10:50]), 2.0 / 40)  # a straight line from p = 0.1 to p = 0.5
    assert lam[50:] == pytest.approx([2.0] * 51)
    assert grl_schedule_lambda(0.05, "linear", ramp=0.0) == 1.0  # no ramp: a step at the delay


def test_constant_holds_its_value_after_the_delay():
    assert {grl_schedule_lambda(p, "constant", max_lambda=0.3) for p in PROGRESS} == {0.3}
    assert grl_schedule_lambda(0.49, "constant", delay=0.5) == 0.0
    assert grl_schedule_lambda(0.5, "constant", delay=0.5) == 1.0


@pytest.mark.parametrize("kwargs,match", [
    ({"schedule": "cosine"}, "grl_schedule 'cosine' is unknown; choose one of 'ganin', 'linear', 'constant'"),
    ({"schedule": "linear", "max_lambda": -1.0}, "grl_max must be"),
    ({"schedule": "linear", "delay": 1.0}, r"grl_delay must be within \[0, 1\)"),
    ({"schedule": "linear", "ramp": 1.5}, r"grl_ramp must be within \[0, 1\]"),
])
def test_bad_schedules_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_grl_schedule(**kwargs)
    with pytest.raises(ValueError, match=match):
        grl_schedule_lambda(0.5, **kwargs)
