"""tools/seed_spread.py: the seeds a 95 % interval of a given half-width needs, against hand-computed t-intervals."""
import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "seed_spread.py"
_spec = importlib.util.spec_from_file_location("seed_spread", TOOL)
seed_spread = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seed_spread)


@pytest.mark.parametrize("spread, seeds", [
    (0.2, 5),   # n = 4: 3.182 * 0.2 / 2 = 0.318 > 0.3; n = 5: 2.776 * 0.2 / 2.236 = 0.248
    (0.3, 7),   # n = 6: 2.571 * 0.3 / 2.449 = 0.315; n = 7: 2.447 * 0.3 / 2.646 = 0.277
    (0.1, 3),   # n = 2: 12.706 * 0.1 / 1.414 = 0.898; n = 3: 4.303 * 0.1 / 1.732 = 0.248
])
def test_seeds_needed_is_the_first_count_whose_half_width_is_small_enough(spread, seeds):
    assert seed_spread.seeds_needed(spread, 0.3) == seeds


def test_a_spread_no_count_reaches_says_so():
    assert seed_spread.seeds_needed(5.0, 0.3, most=20) is None
