"""The ternary scheme (TWN) is one class in quantize.py, registered there: its forward and gradient
against the paper's formula, and the whole package on a ternary ResNet-20 -- train, prune, search,
export and load, fuse, size -- with no module branching on its name."""
import numpy as np
import pytest
import torch

from qrepro.data import load_splits
from qrepro.export import load_packed, save_packed
from qrepro.inference import fuse_for_inference
from qrepro.models import build_model
from qrepro.objective import PruneObjective
from qrepro.prune import prunable_layers, prune, recalibrate_batchnorm
from qrepro.quantize import QuantizationError, make_spec, quantize_model, quantized_layers, ternarize_weight
from qrepro.search import SearchConfig, search_ratios
from qrepro.size import MB, SizeModel, model_size_bytes
from qrepro.train import TrainConfig, evaluate, train


def twn_reference(w: np.ndarray, per_filter: bool = True) -> np.ndarray:
    """Li, Zhang and Liu (2016), eq. (7)-(8) in NumPy: delta = 0.7 E|w|, alpha = mean |w| above delta."""
    out = np.zeros_like(w)
    groups = range(w.shape[0]) if per_filter else [slice(None)]
    for g in groups:
        x = w[g]
        delta = 0.7 * np.abs(x).mean()
        above = np.abs(x) > delta
        alpha = np.abs(x[above]).mean() if above.any() else 0.0
        out[g] = alpha * np.sign(x) * above
    return out


def test_ternary_weights_hand_checked():
    w = torch.tensor([[0.9, -0.1, 0.5, -1.2], [0.2, 0.2, -0.2, 0.0]])
    # filter 0: E|w| = 0.675, delta = 0.4725, kept 0.9, 0.5, -1.2, alpha = 2.6 / 3; filter 1: E|w| = 0.15,
    # delta = 0.105, kept the three 0.2s, alpha = 0.2
    expected = torch.tensor([[2.6 / 3, 0.0, 2.6 / 3, -2.6 / 3], [0.2, 0.2, -0.2, 0.0]])
    assert torch.allclose(ternarize_weight(w), expected, atol=1e-7)


@pytest.mark.parametrize("per_filter", [True, False])
def test_ternary_weights_against_the_formula(per_filter):
    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3, dtype=torch.double)
    got = ternarize_weight(w, "filter" if per_filter else "layer")
    assert np.allclose(got.numpy(), twn_reference(w.numpy(), per_filter), rtol=0, atol=1e-12)
    assert set(torch.unique(torch.sign(got)).tolist()) == {-1.0, 0.0, 1.0}


def test_ternary_gradient_is_straight_through():
    torch.manual_seed(1)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    g = torch.randn(4, 3, 3, 3)
    ternarize_weight(w).backward(g)
    assert torch.equal(w.grad, g)  # dL/dw = dL/dw_t (TWN's update of the latent weights)


def test_the_ternary_scheme_is_two_stored_bits_and_float_activations():
    spec = make_spec("ternary")
    assert (spec.weight, spec.w_bits, spec.act, spec.a_bits) == ("ternary", 2, None, 32)
    with pytest.raises(QuantizationError, match="scheme 'ternary'"):
        make_spec("ternary", w_bits=3)
    with pytest.raises(QuantizationError, match="needs a scale"):
        make_spec("ternary", scaling="none")


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    splits = load_splits("synthetic", batch_size=32, seed=0, image_size=16)
    model = quantize_model(build_model("resnet20", in_channels=1, num_classes=splits.num_classes), "ternary")
    train(model, splits, TrainConfig(dataset="synthetic", batch_size=32, epochs=3, optimizer="adam", lr=1e-3,
                                     weight_decay=0.0), progress=False)
    return model, splits


def test_a_ternary_resnet_trains_prunes_searches_exports_and_fuses(trained, tmp_path):
    model, splits = trained
    # it learned something: 3 epochs reach about 70 % on 1 or 2 threads (1 epoch stays near chance, 25 %)
    assert evaluate(model, splits.val)["acc"] > 100 / splits.num_classes + 20
    # size: 2 bits per quantized weight, 32 per scale, per float weight and bias, 2 x 32 per BatchNorm channel
    by_hand = 0
    for name, m in model.named_modules():
        if name in quantized_layers(model):
            by_hand += 2 * m.weight.numel() + 32 * m.w_scale.numel()
        elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            by_hand += 32 * (m.weight.numel() + (m.bias.numel() if m.bias is not None else 0))
        elif isinstance(m, torch.nn.BatchNorm2d):
            by_hand += 64 * m.num_features
    assert model_size_bytes(model) == by_hand / 8
    # prune: the per-filter scales go with their filters, so the kept filters compute what they computed
    layers = prunable_layers(model)
    pruned = prune(model, 0.5, "redundancy")
    kept_layer = pruned.get_submodule(layers[0])
    assert kept_layer.w_scale.numel() == kept_layer.out_channels < model.get_submodule(layers[0]).out_channels
    # search: a few evaluations under the size constraint, every one feasible
    size = SizeModel.from_model(model, layers)
    result = search_ratios(PruneObjective(model, splits, "redundancy", bn_batches=2, val_images=64), size,
                           SearchConfig(layers=layers, target=0.3, budget=4, n_init=2), progress=False)
    assert len(result.records) == 4 and all(r["feasible"] for r in result.records)
    # export: 2 bits per weight on disk, and the loaded model computes the same logits
    best = prune(model, dict(zip(layers, result.best["ratios"])), "redundancy")
    recalibrate_batchnorm(best, splits.train_eval, 2)
    path = save_packed(tmp_path / "t.qrpk", best)
    loaded, _ = load_packed(path)
    x = next(iter(splits.test))[0]
    with torch.no_grad():
        assert torch.allclose(loaded(x), best.eval()(x), atol=1e-5)
        assert torch.allclose(fuse_for_inference(loaded)(x), loaded(x), atol=1e-4)
    header = path.stat().st_size - model_size_bytes(best)
    assert 0 < header < 0.01 * MB  # the accounted size plus a header of a few kilobytes
