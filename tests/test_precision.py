"""Per-layer bit-widths (qrepro.precision) and the joint bit-width / pruning search, against references:
models quantized directly at each bit-width, sizes measured on the pruned model, BOPs counted by forward
hooks, and a brute-force optimum."""
import copy
import itertools
import random

import pytest
import torch
import torch.nn as nn

from qrepro.checkpoint import load_checkpoint, save_checkpoint
from qrepro.data import load_splits
from qrepro.export import load_packed, save_packed
from qrepro.inference import fuse_for_inference
from qrepro.models import build_model
from qrepro.objective import PruneObjective
from qrepro.precision import (
    BIT_CHOICES,
    Candidate,
    PrecisionCost,
    bit_units,
    layer_bits,
    set_bits,
    unit_bits,
)
from qrepro.prune import prunable_layers, prune, recalibrate_batchnorm
from qrepro.quantize import QuantizationError, is_quantized, quantize_model
from qrepro.search import SearchConfig, SearchError, search_ratios
from qrepro.size import model_size_bytes
from qrepro.space import SearchError as SpaceError
from qrepro.train import TrainConfig, evaluate, train
from tests.networks import PlainCNN, randomize_bn


def resnet20(bits=2):
    return randomize_bn(quantize_model(build_model("resnet20", in_channels=1), "dorefa", bits, bits)).eval()


def at(model, bits_per_unit, layers=None):
    layers = layers or prunable_layers(model)
    return set_bits(copy.deepcopy(model), unit_bits(bit_units(model, layers), dict(zip(layers, bits_per_unit))))


def hook_bops(model, shape):
    """BOPs counted independently: every convolution / linear layer's output positions x weights x weight bits x
    input bits, read off the modules of the pruned model (full precision: 32 x 32)."""
    total = []

    def hook(m, inputs, out):
        positions = out.shape[2:].numel() if isinstance(m, nn.Conv2d) else 1
        wb = m.spec.w_bits if is_quantized(m) else 32
        ab = m.spec.a_bits if is_quantized(m) and m.spec.act is not None else 32
        total.append(positions * m.weight.numel() * wb * ab)

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return sum(total)


@pytest.mark.parametrize("bits", [1, 4, 8])
def test_set_bits_equals_a_model_quantized_at_those_bits(bits):
    fp = build_model("resnet20", in_channels=1).eval()
    direct = quantize_model(fp, "dorefa", bits, bits).eval()
    switched = set_bits(quantize_model(fp, "dorefa", 2, 2), dict.fromkeys(layer_bits(direct), bits)).eval()
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(direct(x), switched(x))
    assert switched.quant_config["layer_bits"] == dict.fromkeys(layer_bits(direct), bits)
    set_bits(switched, dict.fromkeys(layer_bits(direct), 2))
    assert "layer_bits" not in switched.quant_config  # back at the scheme's bits: nothing to record


def test_set_bits_refuses_what_it_cannot_do():
    model = resnet20()
    with pytest.raises(QuantizationError, match="not a quantized layer.*its quantized layers: layer1"):
        set_bits(model, {"conv1": 4})  # the full-precision stem
    with pytest.raises(QuantizationError, match="binary.*has 1 bit"):
        set_bits(quantize_model(build_model("resnet20"), "bnn"), {"layer1.0.conv1": 2})
    pruned = prune(model, 0.5, "l1")
    with pytest.raises(QuantizationError, match="frozen.*set bit-widths before pruning"):
        set_bits(pruned, {"layer1.0.conv1": 4})


def test_units_are_a_block_s_two_convolutions():
    model = resnet20()
    units = bit_units(model)
    assert units["layer2.1.conv1"] == ["layer2.1.conv1", "layer2.1.conv2"]
    assert len(units) == 9 and sum(map(len, units.values())) == 18  # the two projection shortcuts are in none


@pytest.mark.parametrize("net", ["resnet20", "plain"])
def test_cost_equals_the_pruned_model_s_size_and_hook_counted_bops(net):
    if net == "resnet20":
        model, shape = resnet20(), (1, 28, 28)
    else:  # a chain: every layer reads what the one before writes, so size is bilinear in the ratios
        model, shape = randomize_bn(quantize_model(PlainCNN(), "dorefa", 2, 2)).eval(), (1, 28, 28)
    layers = prunable_layers(model)
    cost = PrecisionCost.from_model(model, shape)
    assert cost.base == model_size_bytes(model) and cost.bops_base == hook_bops(model, shape)
    rng = random.Random(0)
    for _ in range(6):
        b = [rng.choice(BIT_CHOICES) for _ in layers]
        r = [rng.uniform(0, 0.9) for _ in layers]
        pruned = prune(at(model, b), dict(zip(layers, r)), "l1")
        assert float(cost.size(b, r)[0]) == pytest.approx(model_size_bytes(pruned), rel=1e-12)
        assert float(cost.bops(b, r)[0]) == pytest.approx(hook_bops(pruned, shape), rel=1e-12)
        for what, exact in (("size", cost.size(b, r)), ("bops", cost.bops(b, r))):
            const, coef = cost.linear(torch.tensor([b]), what, 0.9)
            assert float(const - coef @ torch.tensor(r, dtype=torch.double)) >= float(exact[0]) - 1e-6
    const, coef = cost.linear(torch.full((1, len(layers)), 2.0), "size", 0.9)
    assert float(const[0]) == pytest.approx(cost.base)  # exact at ratio 0


def test_mixed_precision_export_load_and_fused_inference(tmp_path):
    torch.manual_seed(0)
    model = resnet20().double()
    layers = prunable_layers(model)
    pruned = prune(at(model, [1, 2, 4, 8, 1, 2, 4, 8, 2]), dict.fromkeys(layers, 0.3), "l1").eval()
    x = torch.randn(4, 1, 28, 28, dtype=torch.double)
    ref = pruned(x)
    path = save_packed(tmp_path / "m.qrpk", pruned)
    assert path.stat().st_size / model_size_bytes(pruned) <= 1.02
    loaded, _ = load_packed(path)
    assert layer_bits(loaded) == layer_bits(pruned)
    assert torch.allclose(loaded.double()(x), ref, atol=1e-5)
    save_checkpoint(path.with_suffix(".pt"), pruned)
    again, _ = load_checkpoint(path.with_suffix(".pt"))
    assert torch.equal(again(x), ref)
    assert torch.allclose(fuse_for_inference(pruned)(x), ref, atol=1e-9)


def test_objective_at_a_candidate_is_set_bits_then_prune_then_bn_then_accuracy():
    splits = load_splits("synthetic", batch_size=32)
    model = randomize_bn(quantize_model(build_model("resnet20", in_channels=1, num_classes=4), "dorefa", 2, 2))
    layers = prunable_layers(model)
    objective = PruneObjective(model, splits, "l1", bn_batches=2, val_images=64)
    bits, ratios = [8, 1, 2, 4, 8, 1, 2, 4, 1], [0.5, 0, 0.2, 0, 0.7, 0, 0, 0.3, 0]
    got = objective(Candidate(dict(zip(layers, ratios)), dict(zip(layers, bits))))
    by_hand = prune(at(model, bits), dict(zip(layers, ratios)), "l1")
    recalibrate_batchnorm(by_hand, objective.bn_loader, 2)
    assert got == evaluate(by_hand, objective.val)["acc"]


class Toy:
    """``sum_l (log2 b_l - 2 r_l^2) w_l`` on 4 single-layer units: more bits always help, so the best
    candidate spends the whole budget; small enough to brute-force."""

    layers = ["a", "b", "c", "d"]
    weight = {"a": 3.0, "b": 1.0, "c": 2.0, "d": 0.5}

    def cost(self):
        terms = [{"name": n, "params": 1000 * (i + 1), "macs": 64000 * (i + 1), "w_bits": 2, "a_bits": 2,
                  "unit": i, "follows": True, "groups": [i]} for i, n in enumerate(self.layers)]
        cost = PrecisionCost(self.layers, dict.fromkeys(self.layers, 1000), {n: [n] for n in self.layers}, terms,
                             100.0, dict.fromkeys(self.layers, 0.01))
        two, zero = torch.full((1, 4), 2.0), torch.zeros(1, 4)
        cost.base, cost.bops_base = float(cost.size(two, zero)), float(cost.bops(two, zero))
        return cost

    def __call__(self, c):
        return sum((torch.tensor(float(c.bits[n])).log2().item() - 2 * c.ratios[n] ** 2) * self.weight[n]
                   for n in self.layers)


@pytest.mark.parametrize("space,method,bops", [("joint", "bo", None), ("joint", "random", None),
                                              ("joint", "bo", 0.4), ("bits", "bo", 0.2)])
def test_every_joint_candidate_meets_the_budgets(space, method, bops):
    toy = Toy()
    cost = toy.cost()
    cfg = SearchConfig(layers=toy.layers, space=space, method=method, target=0.2, bops_target=bops, budget=14,
                       n_init=5, raw_samples=64)
    res = search_ratios(toy, cost, cfg, progress=False)
    assert len(res.records) == 14
    for rec in res.records:
        assert rec["feasible"] and rec["size"] <= 0.8 * cost.base * (1 + 1e-9)
        if bops is not None:
            assert rec["bops"] <= (1 - bops) * cost.bops_base * (1 + 1e-9)
        assert set(rec["bits"]) <= set(BIT_CHOICES)
        if space == "bits":
            assert rec["ratios"] == [0.0] * 4


def test_joint_bo_finds_the_brute_force_bits_better_than_random():
    toy = Toy()
    cost = toy.cost()
    best = {}
    for bits in itertools.product(BIT_CHOICES, repeat=4):  # the best ratio-free candidate that fits
        if float(cost.size(list(bits), [0.0] * 4)[0]) <= cost.base:
            best[bits] = toy(Candidate(dict.fromkeys(toy.layers, 0.0), dict(zip(toy.layers, bits))))
    first = {}  # the evaluation at which each search first reaches the optimum
    for method in ("bo", "random"):
        cfg = SearchConfig(layers=toy.layers, space="bits", method=method, target=0.0, budget=16, n_init=4)
        values = [r["value"] for r in search_ratios(toy, cost, cfg, progress=False).records]
        first[method] = next((i for i, v in enumerate(values) if v == pytest.approx(max(best.values()))), 99)
    assert first["bo"] < 16 and first["bo"] < first["random"]


def test_joint_pareto_front_trades_accuracy_size_and_bops():
    toy = Toy()
    cfg = SearchConfig(layers=toy.layers, space="joint", mode="pareto", budget=10, n_init=5, raw_samples=64)
    res = search_ratios(toy, toy.cost(), cfg, progress=False)
    assert all("bops_fraction" in r and r["hypervolume"] >= 0 for r in res.records)
    hv = [r["hypervolume"] for r in sorted(res.records, key=lambda r: r["index"])]
    assert hv == sorted(hv) and hv[-1] > 0
    for a in res.front:  # no front member is dominated in all three objectives
        assert not any(b["value"] >= a["value"] and b["pruned_fraction"] >= a["pruned_fraction"]
                       and b["bops_fraction"] >= a["bops_fraction"] and b is not a and
                       (b["value"], b["pruned_fraction"], b["bops_fraction"]) !=
                       (a["value"], a["pruned_fraction"], a["bops_fraction"]) for b in res.records)


def test_joint_search_resumes_from_its_journal(tmp_path):
    toy = Toy()
    cfg = SearchConfig(layers=toy.layers, space="joint", target=0.2, budget=10, n_init=4, raw_samples=64)
    whole = search_ratios(toy, toy.cost(), cfg, journal=tmp_path / "a.jsonl", progress=False)
    calls = []

    def stop_after_seven(c):
        if len(calls) == 7:
            raise KeyboardInterrupt
        calls.append(c)
        return toy(c)

    with pytest.raises(KeyboardInterrupt):
        search_ratios(stop_after_seven, toy.cost(), cfg, journal=tmp_path / "b.jsonl", progress=False)
    resumed = search_ratios(toy, toy.cost(), cfg, journal=tmp_path / "b.jsonl", progress=False)
    assert [r["x"] for r in resumed.records] == [r["x"] for r in whole.records]


@pytest.mark.parametrize("kw,match", [
    (dict(space="joint", method="uniform"), "method 'uniform' searches ratios"),
    (dict(space="joint", bit_choices=[1, 16]), "bit_choices must be distinct bit-widths from 1 to 8"),
    (dict(bops_target=0.3), "bops_target .* applies to spaces 'bits' and 'joint'"),
    (dict(space="qubits"), "unknown search space 'qubits'"),
])
def test_bad_joint_configs(kw, match):
    with pytest.raises(SearchError, match=match):
        SearchConfig(layers=Toy.layers, **kw)


def test_unreachable_budget_and_wrong_size_model():
    toy = Toy()
    with pytest.raises(SpaceError, match="the budget cannot be met: at 1 bits without pruning"):
        search_ratios(toy, toy.cost(), SearchConfig(layers=toy.layers, space="bits", target=0.9), progress=False)
    from qrepro.size import SizeModel
    with pytest.raises(SearchError, match="needs a qrepro.precision.PrecisionCost"):
        search_ratios(toy, SizeModel(1.0, dict.fromkeys(toy.layers, 1), dict.fromkeys(toy.layers, 0.1)),
                      SearchConfig(layers=toy.layers, space="joint"), progress=False)


def test_any_precision_training_draws_per_step_and_ends_at_the_config_bits(monkeypatch):
    import qrepro.train as train_module

    drawn = []
    real = train_module.draw_bits
    monkeypatch.setattr(train_module, "draw_bits", lambda m, c, g: drawn.append(real(m, c, g)) or drawn[-1])
    splits = load_splits("synthetic", batch_size=32)
    cfg = TrainConfig(arch="resnet20", dataset="synthetic", scheme="dorefa", w_bits=2, a_bits=2, epochs=1,
                      optimizer="adam", lr=1e-3, bit_choices=[1, 2, 4, 8], arch_kwargs={"num_classes": 4,
                                                                                        "in_channels": 1})
    model = quantize_model(build_model("resnet20", in_channels=1, num_classes=4), "dorefa", 2, 2)
    train(model, splits, cfg, progress=False, max_steps=4)
    assert len(drawn) == 4 and len({tuple(d.values()) for d in drawn}) == 4  # a new draw every step
    assert set(b for d in drawn for b in d.values()) == {1, 2, 4, 8}
    assert set(layer_bits(model).values()) == {2} and "layer_bits" not in model.quant_config
    again = []
    monkeypatch.setattr(train_module, "draw_bits", lambda m, c, g: again.append(real(m, c, g)) or again[-1])
    train(quantize_model(build_model("resnet20", in_channels=1, num_classes=4), "dorefa", 2, 2), splits, cfg,
          progress=False, max_steps=4)
    assert again == drawn  # seeded by the step: a rerun (or a resumed run) draws the same


def test_any_precision_config_is_checked_and_left_out_of_old_keys():
    assert "bit_choices" not in TrainConfig(scheme="dorefa").to_dict()
    for kw in (dict(scheme="bnn"), dict(scheme="dorefa", compile=True), dict(scheme="dorefa", w_bits=4, a_bits=2)):
        with pytest.raises(Exception, match="bit_choices .* needs scheme = 'dorefa'"):
            TrainConfig(bit_choices=[1, 2], **kw)


def test_joint_batches_run_concurrently_and_stay_within_budget():
    """q = 2 candidates at a time in a caller's executor (the path Dask workers take): the second of a batch is
    proposed with the first as a pending point, and every candidate travels to the objective as a Candidate."""
    from concurrent.futures import ThreadPoolExecutor

    toy = Toy()
    cost = toy.cost()
    cfg = SearchConfig(layers=toy.layers, space="joint", target=0.2, budget=10, n_init=4, q=2, raw_samples=64)
    with ThreadPoolExecutor(2) as pool:
        res = search_ratios(toy, cost, cfg, executor=pool, progress=False)
    assert cfg.acquisition == "qlognei" and len(res.records) == 10
    assert all(r["feasible"] and r["size"] <= 0.8 * cost.base * (1 + 1e-9) for r in res.records)
    assert len({tuple(r["x"]) for r in res.records}) == 10  # no batch proposes the same candidate twice
