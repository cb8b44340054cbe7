"""The BoTorch search on synthetic objectives with known constrained optima (no training)."""
import json
import statistics
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from qrepro.gp import hypervolume, pareto_front
from qrepro.journal import JournalMismatch, rejected_path
from qrepro.search import SearchConfig, search_ratios
from qrepro.size import SizeModel
from qrepro.space import uniform_ratio

LAYERS = ["a", "b", "c", "d"]


def toy_size():
    # 100-filter layers of 1, 2, 3, 4 bytes per filter on a 2,000-byte model
    return SizeModel(2000.0, {n: 100 for n in LAYERS}, {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0})


class Toy:
    """A smooth objective whose unconstrained optimum (all ratios 0.1) is infeasible, so the
    best feasible point sits on the constraint: cheap layers should be pruned harder."""

    def __init__(self):
        self.calls = []

    def __call__(self, ratios):
        self.calls.append(dict(ratios))
        r = torch.tensor([ratios[n] for n in LAYERS])
        sens = torch.tensor([4.0, 3.0, 1.0, 0.5])  # accuracy lost per squared ratio, per layer
        return float(90 - 100 * (sens * (r - 0.1) ** 2).sum())


def cfg(**kw):
    base = dict(layers=LAYERS, target=0.4, r_max=0.9, budget=16, n_init=6, seed=0, num_restarts=4, raw_samples=128)
    return SearchConfig(**{**base, **kw})


def test_size_model_exact_never_exceeds_linear():
    size = toy_size()
    for r in ([0.0] * 4, [0.25, 0.5, 0.33, 0.9], [0.123, 0.456, 0.789, 0.05]):
        assert size.exact_size(r) <= size.linear_size(torch.tensor(r)).item() + 1e-9


def test_size_model_from_real_model_matches_pruning():
    from qrepro.models import build_model
    from qrepro.prune import prune
    from qrepro.quantize import quantize_model
    from qrepro.size import model_size_bytes

    model = quantize_model(build_model("resnet20", in_channels=1), "bnn")
    size = SizeModel.from_model(model)
    ratios = [0.1 * (i % 9) for i in range(len(size.layers))]
    pruned = prune(model, dict(zip(size.layers, ratios)), criterion="l1")
    assert size.exact_size(ratios) == pytest.approx(model_size_bytes(pruned))
    assert size.base == model_size_bytes(model)


def test_bo_beats_random_search_and_never_evaluates_infeasible():
    size, need = toy_size(), (1 - 0.4) * 2000
    bo_best, rs_best = [], []
    for seed in range(3):
        toy = Toy()
        res = search_ratios(toy, size, cfg(seed=seed), progress=False)
        assert len(res.records) == 16 and res.best["feasible"]
        assert all(size.exact_size(list(c.values())) <= need + 1e-6 for c in toy.calls)
        bo_best.append(res.best["value"])
    for seed in range(5):
        rs_best.append(search_ratios(Toy(), size, cfg(method="random", seed=seed), progress=False).best["value"])
    assert min(bo_best) > statistics.median(rs_best), (bo_best, rs_best)


def test_uniform_baseline_meets_the_target_with_the_smallest_ratio():
    size, c = toy_size(), cfg(method="uniform")
    r = uniform_ratio(c, size)
    assert size.exact_size([r] * 4) <= 0.6 * 2000 + 1e-6
    assert size.exact_size([r - 0.01] * 4) > 0.6 * 2000
    res = search_ratios(Toy(), size, c, progress=False)
    assert len(res.records) == 1 and res.best["ratios"] == pytest.approx([r] * 4)


class Crash(Exception):
    pass


class CrashAfter(Toy):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def __call__(self, ratios):
        if len(self.calls) >= self.k:
            raise Crash()
        return super().__call__(ratios)


def test_resume_after_a_crash_evaluates_nothing_twice(tmp_path):
    path = tmp_path / "journal.jsonl"
    first = CrashAfter(8)
    with pytest.raises(Crash):
        search_ratios(first, toy_size(), cfg(budget=12), journal=path, progress=False)
    # simulate a torn last line on top of the crash
    with open(path, "a") as f:
        f.write('{"type": "eval", "index": 99, "val')
    second = Toy()
    res = search_ratios(second, toy_size(), cfg(budget=12), journal=path, progress=False)
    indices = [r["index"] for r in res.records]
    assert indices == list(range(12))
    assert len(first.calls) == 8 and len(second.calls) == 12 - 8  # the 9th, pending at the crash, runs once
    torn = '{"type": "eval", "index": 99, "val'
    text = path.read_text().splitlines()
    assert torn in text  # kept as it was: the journal is never rewritten
    assert [json.loads(x)["text"] for x in rejected_path(path).read_text().splitlines()] == [torn]
    lines = [json.loads(line) for line in text if line != torn]
    assert sum(r["type"] == "eval" for r in lines) == 12
    # the resumed run equals an uninterrupted one
    straight = search_ratios(Toy(), toy_size(), cfg(budget=12), progress=False)
    assert torch.allclose(torch.tensor([r["x"] for r in res.records]),
                          torch.tensor([r["x"] for r in straight.records]), atol=1e-6)


def test_same_seed_same_candidates(tmp_path):
    a = search_ratios(Toy(), toy_size(), cfg(budget=9), journal=tmp_path / "a.jsonl", progress=False)
    b = search_ratios(Toy(), toy_size(), cfg(budget=9), progress=False)
    assert [r["x"] for r in a.records] == [r["x"] for r in b.records]
    # one at a time, each BO proposal conditions on every candidate before it
    pending = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()][1::2]
    assert [r["observed"] for r in pending if r["source"] == "bo"] == [r["index"] for r in pending if r["source"] == "bo"]


def test_mismatched_journal_is_refused(tmp_path):
    path = tmp_path / "j.jsonl"
    search_ratios(Toy(), toy_size(), cfg(budget=3, n_init=2), journal=path, progress=False)
    with pytest.raises(JournalMismatch, match="another configuration"):
        search_ratios(Toy(), toy_size(), cfg(budget=3, n_init=2, target=0.3), journal=path, progress=False)


def test_q_batch_through_a_caller_executor(tmp_path):
    with ThreadPoolExecutor(2) as ex:
        res = search_ratios(Toy(), toy_size(), cfg(budget=8, n_init=4, q=2), executor=ex, progress=False,
                            journal=tmp_path / "j.jsonl")
    assert len(res.records) == 8 and {r["source"] for r in res.records} == {"sobol", "bo"}
    # 2 slots, batches of 2: synchronous batches, each conditioned on every candidate before it (lag 0)
    bo = [json.loads(x) for x in (tmp_path / "j.jsonl").read_text().splitlines() if '"pending"' in x and '"bo"' in x]
    assert [(r["index"], r["observed"]) for r in bo] == [(4, 4), (5, 4), (6, 6), (7, 6)]


def test_pareto_mode_front_is_non_dominated_and_hypervolume_grows():
    res = search_ratios(Toy(), toy_size(), cfg(mode="pareto", budget=10, n_init=5), progress=False)
    hv = [r["hypervolume"] for r in res.records]
    assert all(b >= a - 1e-9 for a, b in zip(hv, hv[1:])) and hv[-1] > 0
    pts = torch.tensor([[r["value"], r["pruned_fraction"]] for r in res.front], dtype=torch.double)
    for i, p in enumerate(pts):
        others = torch.cat([pts[:i], pts[i + 1:]])
        assert not ((others >= p).all(1) & (others > p).any(1)).any()
    allpts = torch.tensor([[r["value"], r["pruned_fraction"]] for r in res.records], dtype=torch.double)
    assert hypervolume(allpts, torch.zeros(2, dtype=torch.double)) == pytest.approx(hv[-1])


def test_pareto_front_by_hand():
    pts = torch.tensor([[1.0, 0.2], [0.2, 1.0], [0.5, 0.5], [0.4, 0.4]], dtype=torch.double)
    assert pareto_front(pts).tolist() == [True, True, True, False]
    # slabs sorted by the first objective: 1 x 0.2 + 0.5 x (0.5 - 0.2) + 0.2 x (1 - 0.5)
    assert hypervolume(pts, torch.zeros(2, dtype=torch.double)) == pytest.approx(0.2 + 0.15 + 0.1)


@pytest.mark.parametrize("kw,match", [
    (dict(layers=[]), "at least one layer"),
    (dict(r_max=1.0), r"r_max must be in \(0, 1\)"),
    (dict(r_max=0.0), r"r_max must be in \(0, 1\)"),
    (dict(method="grid"), "bo, random, uniform"),
    (dict(target=1.2), r"target"),
])
def test_bad_configs(kw, match):
    with pytest.raises(ValueError, match=match):
        cfg(**kw)


def test_unreachable_target():
    with pytest.raises(ValueError, match="cannot be reached"):
        search_ratios(Toy(), toy_size(), cfg(target=0.9, r_max=0.5), progress=False)


def test_q_batch_in_the_default_process_pool():
    """q > 1 with no executor: a local pool of spawned processes evaluates each batch."""
    res = search_ratios(Toy(), toy_size(), cfg(budget=4, n_init=2, q=2), progress=False)
    assert [r["index"] for r in res.records] == [0, 1, 2, 3]
    assert all(r["value"] == pytest.approx(Toy()(dict(zip(LAYERS, r["ratios"])))) for r in res.records)


def test_convergence_curve_follows_candidate_index_not_finish_order():
    """report.convergence: best feasible value among candidates 0..n-1, by hand; the journal's
    best_so_far (finish order: 2 finished first here) is not what it reads."""
    import pandas as pd

    from qrepro.report import convergence

    rows = [  # (index, value, feasible, best_so_far as journaled in finish order 2, 0, 1, 3)
        (2, 70.0, True, 70.0), (0, 60.0, True, 70.0), (1, 90.0, False, 70.0), (3, 65.0, True, 70.0)]
    df = pd.DataFrame([{"model": "bnn", "target": 0.5, "method": "bo", "criterion": "redundancy", "seed": 0,
                        "mode": "constrained", "index": i, "value": v, "feasible": f, "best_so_far": b}
                       for i, v, f, b in rows])
    got = convergence(df, budget=5)["best_val_top1"].tolist()
    assert got == [60.0, 60.0, 70.0, 70.0, 70.0]
