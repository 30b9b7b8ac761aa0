"""samc.stats: the paired mean difference and its Student-t interval."""
import math

import pytest

from samc.stats import paired_difference


def test_paired_difference_matches_the_textbook_formula():
    a, b = [74.05, 67.89, 67.54], [72.87, 69.55, 74.59]
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)          # t_{2, 0.975}
    r = paired_difference(a, b)
    assert r.n == 3 and r.mean == pytest.approx(mean) and r.sd == pytest.approx(sd)
    assert (r.low, r.high) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert not r.excludes_zero and str(r).startswith(f"{mean:+.2f} [")


def test_a_consistent_shift_excludes_zero_and_pairs_matter():
    a = [70.0, 75.0, 80.0, 65.0, 72.0]
    r = paired_difference(a, [x - 1.0 - 0.1 * i for i, x in enumerate(a)])
    assert r.excludes_zero and r.low > 0
    # the same values unpaired (shuffled) no longer show a consistent shift
    assert not paired_difference(a, [79.0, 64.0, 71.0, 69.0, 74.0]).excludes_zero


def test_one_pair_has_no_interval_and_bad_input_is_refused():
    r = paired_difference([1.0], [0.5])
    assert r.mean == 0.5 and math.isnan(r.low) and "no interval" in str(r)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no pairs"):
        paired_difference([], [])
