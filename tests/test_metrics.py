"""ACC, BWT (both conventions) and FWT on hand-made accuracy matrices."""
import numpy as np
import pytest

from samc.metrics import acc, bwt, fwt, summary

R = np.array([
    [90.0, 10.0, 20.0],
    [80.0, 85.0, 30.0],
    [70.0, 75.0, 95.0],
])


def test_acc_is_mean_of_last_row():
    assert acc(R) == pytest.approx((70 + 75 + 95) / 3)


def test_bwt_paper_divides_by_t_minus_1():
    # (70-90) + (75-85) = -30 over T-1 = 2 tasks
    assert bwt(R) == pytest.approx(-15.0)


def test_bwt_gem_code_divides_by_t():
    assert bwt(R, "gem_code") == pytest.approx(-10.0)


def test_fwt():
    b = np.array([50.0, 50.0, 50.0])
    assert fwt(R, b) == pytest.approx(((10 - 50) + (30 - 50)) / 2)


def test_single_task_and_summary():
    assert bwt(np.array([[80.0]])) == 0.0
    s = summary(R)
    assert set(s) == {"acc", "bwt", "bwt_gem_code"}
    with pytest.raises(ValueError, match="convention"):
        bwt(R, "other")
