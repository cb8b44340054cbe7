"""The seed count of Study v2's rule (docs/study-v2.md) against hand-computed t-intervals and pooled spreads."""
import math

import pandas as pd
import pytest

from qrepro.report import pooled_spread, seeds_for_claims, seeds_needed


@pytest.mark.parametrize("spread, seeds", [
    (0.2, 5),   # n = 4: 3.182 * 0.2 / 2 = 0.318 > 0.3; n = 5: 2.776 * 0.2 / 2.236 = 0.248
    (0.3, 7),   # n = 6: 2.571 * 0.3 / 2.449 = 0.315; n = 7: 2.447 * 0.3 / 2.646 = 0.277
    (0.1, 3),   # n = 2: 12.706 * 0.1 / 1.414 = 0.898; n = 3: 4.303 * 0.1 / 1.732 = 0.248
])
def test_seeds_needed_is_the_first_count_whose_half_width_is_small_enough(spread, seeds):
    assert seeds_needed(spread, 0.3) == seeds


def test_a_spread_no_count_reaches_says_so():
    assert seeds_needed(5.0, 0.3, most=20) is None


def test_pooled_spread_weighs_each_cell_by_its_degrees_of_freedom():
    # cell A: 1, 3 (variance 2, 1 dof); cell B: 0, 1, 2 (variance 1, 2 dof); cell C: one seed (no dof)
    pairs = pd.DataFrame({"model": ["bnn"] * 5 + ["dorefa"], "target": [0.5, 0.5, 0.7, 0.7, 0.7, 0.5],
                          "epochs": 1.0, "bo_minus_uniform": [1.0, 3.0, 0.0, 1.0, 2.0, 9.0]})
    spread, dof = pooled_spread(pairs)
    assert dof == 3 and spread == pytest.approx(math.sqrt((2 * 1 + 1 * 2) / 3))


def test_one_seed_per_cell_has_no_spread_yet():
    spread, dof = pooled_spread(pd.DataFrame({"model": ["bnn"], "target": [0.5], "epochs": [1.0],
                                              "bo_minus_uniform": [0.4]}))
    assert dof == 0 and math.isnan(spread)


def test_each_claim_states_the_seeds_its_own_spread_needs():
    # (a) 4 seeds, half-width 3.182 * 0.44 / 2 = 0.700: spread 0.44 needs 11 seeds (n = 10: 2.262 * 0.44 / 3.162 =
    # 0.315; n = 11: 2.228 * 0.44 / 3.317 = 0.296); (d) half-width 0.2 already meets 0.3; (f) is no t-interval
    claims = pd.DataFrame({"question": ["a", "d", "f"], "seeds": [4, 4, 8],
                           "half_width": [3.182446 * 0.44 / 2, 0.2, 0.6]})
    assert list(seeds_for_claims(claims)) == [11, None, None]
