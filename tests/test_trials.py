"""Study v2's paired trials: the jobs a preset makes, the uniform ratio at a pick's size, and the statistics the
claims table states (each against a hand-computed value or an independent computation)."""
import math

import numpy as np
import pandas as pd
import pytest

from qrepro import tables
from qrepro.config import load_preset
from qrepro.jobs import TrialJob, trial_jobs
from qrepro.size import SizeModel
from qrepro.study import ratio_at_size
from qrepro.validation import ConfigError


def test_seed_s_pairs_search_s_with_fine_tune_s_and_uniform_reads_bo():
    jobs = {j.id: j for j in trial_jobs(load_preset("fmnist-resnet18"))}
    bo = jobs["trial/bnn-bo-t0.5-e1.0-s2"]
    assert bo.search().id == "search/bnn-constrained-bo-t0.5-s2"
    assert jobs["trial/bnn-uniform-t0.5-e1.0-s2"].search().id == bo.search().id  # it meets BO's pick's size
    assert jobs["trial/dorefa-random-t0.5-e1.0-s3"].search().id == "search/dorefa-constrained-random-t0.5-s3"
    assert jobs["trial/bnn-bo-fpgm-t0.2612-e1.0-s0"].search().id == "search/bnn-constrained-bo-fpgm-t0.2612-s0"
    assert jobs["trial/bnn-unpruned-e1.0-s1"].search() is None
    assert "trial/bnn-bo-redundancy-t0.2612-e1.0-s0" not in jobs  # the study's own criterion has one name
    ranked = [j for j in jobs.values() if j.rank is not None]
    assert [j.rank for j in ranked] == list(range(8)) and {j.search().id for j in ranked} == {
        "search/bnn-constrained-bo-t0.5-s0"}


def test_a_trial_whose_search_the_preset_does_not_run_is_refused_in_one_line():
    cfg = load_preset("fmnist-resnet18")
    cfg.search.seeds = [0, 1]
    with pytest.raises(ConfigError, match=r"^trials need 24 searches the preset's \[search\] does not run \("
                                          r"search/bnn-constrained-bo-bn_scale-t0.2612-s2, .* and 21 more\); add"):
        trial_jobs(cfg)


def test_ratio_at_size_is_the_smallest_uniform_ratio_within_the_size():
    size = SizeModel(10_000.0, {"a": 16, "b": 32, "c": 64}, {"a": 40.0, "b": 30.0, "c": 20.0})
    for most in (9_500.0, 8_800.0, 7_777.0):
        r = ratio_at_size(size, most, 0.9)
        assert size.exact_size([r] * 3) <= most
        grid = [x / 10_000 for x in range(9_001)]  # brute force on a fine grid: nothing below r fits
        assert all(size.exact_size([x] * 3) > most for x in grid if x < r - 1e-9)
        assert r <= next(x for x in grid if size.exact_size([x] * 3) <= most)


def test_paired_interval_equals_the_hand_computed_t_interval():
    mean, low, high = tables.paired_interval([0.5, 0.1, 0.3, 0.7])
    sd = math.sqrt(((0.1) ** 2 + 0.3 ** 2 + 0.1 ** 2 + 0.3 ** 2) / 3)
    half = 3.182446305284263 * sd / 2  # t_{0.975, 3}
    assert mean == pytest.approx(0.4) and low == pytest.approx(0.4 - half) and high == pytest.approx(0.4 + half)
    assert math.isnan(tables.paired_interval([0.2])[1])


def test_spearman_interval_and_verdicts():
    rho, low, high = tables.spearman_interval([1, 2, 3, 4, 5, 6, 7, 8], [2, 1, 4, 3, 6, 5, 8, 7])
    assert rho == pytest.approx(1 - 6 * 8 / (8 * 63))  # 1 - 6 sum d^2 / (n (n^2 - 1)), d = +-1 everywhere
    z, half = math.atanh(rho), 1.959963984540054 * 1.06 / math.sqrt(5)
    assert low == pytest.approx(math.tanh(z - half)) and high == pytest.approx(math.tanh(z + half))
    assert tables.verdict(0.1, 0.5, 0.0) == "supported"
    assert tables.verdict(-0.5, -0.1, 0.0) == "not supported"
    assert tables.verdict(-0.1, 0.5, 0.0) == "inconclusive"
    assert tables.verdict(-0.9, 0.2, -1.0) == "supported"  # (d): within 1 point of the unpruned model


def test_trial_claims_pairs_by_seed_and_matches_arms():
    rows = []
    for seed, (bo, uni, unp, rnd, l1) in enumerate([(90, 89, 91, 88, 89.5), (91, 90.5, 91.5, 89, 90),
                                                   (90.5, 89.5, 91, 88.5, 90.5)]):
        common = {"model": "bnn", "epochs": 1.0, "seed": seed, "rank": np.nan, "search_value": 80.0}
        rows += [{**common, "method": "bo", "criterion": None, "target": 0.2612, "test_top1": bo, "size_MB": 1.0},
                 {**common, "method": "uniform", "criterion": None, "target": 0.2612, "test_top1": uni,
                  "size_MB": 0.99},
                 {**common, "method": "unpruned", "criterion": None, "target": None, "test_top1": unp, "size_MB": 2.0},
                 {**common, "method": "random", "criterion": None, "target": 0.2612, "test_top1": rnd, "size_MB": 1.0},
                 {**common, "method": "bo", "criterion": "l1", "target": 0.2612, "test_top1": l1, "size_MB": 1.0}]
    out = tables.trial_claims(pd.DataFrame(rows)).set_index("question")
    assert out.loc["a", "difference"] == pytest.approx(np.mean([1, 0.5, 1])) and out.loc["a", "seeds"] == 3
    assert out.loc["a", "size_difference_KB"] == pytest.approx(0.01 * 1024)
    assert out.loc["b", "difference"] == pytest.approx(np.mean([0.5, 1, 0])) and "l1" in out.loc["b", "claim"]
    assert out.loc["c", "difference"] == pytest.approx(np.mean([2, 2, 2])) and out.loc["c", "verdict"] == "supported"
    assert out.loc["d", "difference"] == pytest.approx(np.mean([-1, -0.5, -0.5]))


def test_a_second_study_writes_its_tables_in_its_own_folder():
    """Two studies in one results folder: Study v2's tables never overwrite the full study's (their names carry no
    key); a folder outside tables/ is refused in one line."""
    from qrepro.study import study_graph

    full, v2 = study_graph("full", "results"), study_graph("fmnist-resnet18", "results")
    assert full.path("table/baselines").parent.name == "tables"
    assert v2.path("table/baselines").parent == full.path("table/baselines").parent / "fmnist-resnet18"
    cfg = load_preset("smoke")
    for bad in ("../elsewhere", "/tmp/x", "figures"):
        with pytest.raises(ValueError, match="must be 'tables' or a folder inside it"):
            type(cfg)(**{**cfg.__dict__, "tables": bad})
