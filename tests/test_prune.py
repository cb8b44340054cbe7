"""Criteria on cases with known answers, physical removal against a masked reference,
hand-computed channel counts and sizes, export round trip, and every bad input."""
import copy
import itertools

import pytest
import torch

from qrepro.criteria import CRITERIA, LayerView, pairwise_distances, select_filters
from qrepro.export import load_packed, save_packed
from qrepro.models import build_model
from qrepro.prune import n_keep, prunable_layers, prune, recalibrate_batchnorm
from qrepro.quantize import quantize_model
from qrepro.size import model_size_bytes

from networks import masked_reference, randomize_bn


def qmodel(arch, scheme, seed=0):
    torch.manual_seed(seed)
    bits = 2 if scheme == "dorefa" else None
    kw = {"in_channels": 1} if arch == "resnet20" else {"num_classes": 10}
    return randomize_bn(quantize_model(build_model(arch, **kw), scheme, w_bits=bits, a_bits=bits)).eval()


def binary_view(codes, gamma=None, name="layer"):
    return LayerView(name, codes.float(), codes.float(), "binary", gamma)


# --------------------------------------------------------------------------- criteria
def test_hamming_distances_equal_a_brute_force_loop():
    torch.manual_seed(0)
    codes = torch.where(torch.rand(12, 40) < 0.5, -1.0, 1.0)
    d = pairwise_distances(codes, "binary")
    for i, j in itertools.product(range(12), repeat=2):
        assert d[i, j] == sum(int(a != b) for a, b in zip(codes[i].tolist(), codes[j].tolist()))


def test_l2_and_cosine_distances_equal_a_brute_force_loop():
    torch.manual_seed(1)
    levels = torch.randint(0, 4, (7, 9)).double()
    d = pairwise_distances(levels, "levels", "l2")
    c = pairwise_distances(levels, "levels", "cosine")
    for i, j in itertools.product(range(7), repeat=2):
        assert d[i, j] == pytest.approx(((levels[i] - levels[j]) ** 2).sum().sqrt().item(), abs=1e-9)
        a, b = levels[i] - 1.5, levels[j] - 1.5
        assert c[i, j] == pytest.approx(1 - (a @ b / (a.norm() * b.norm())).item(), abs=1e-9)


@pytest.mark.parametrize("tie_break", ["gamma", "geometric_median"])
def test_redundancy_removes_exactly_the_planted_duplicates(tie_break):
    torch.manual_seed(2)
    base = torch.where(torch.rand(10, 64) < 0.5, -1.0, 1.0)
    copies = base[[1, 4, 7]]  # three planted copies
    codes = torch.cat([base, copies])  # copies sit at 10, 11, 12
    gamma = torch.cat([torch.ones(10), torch.full((3,), 0.1)])  # the copies are the less important members
    sel = select_filters(binary_view(codes, gamma), 10, "redundancy", tie_break=tie_break)
    kept = set(sel.keep.tolist())
    # each duplicate pair loses exactly one member; with the gamma tie-break, the planted copy
    for original, copy_ in ((1, 10), (4, 11), (7, 12)):
        assert len(kept & {original, copy_}) == 1
    if tie_break == "gamma":
        assert kept == set(range(10))


def test_redundancy_removes_the_closest_pair_member_first():
    # filters 0 and 1 differ in one bit, all others are far apart; gamma says 1 matters less
    codes = torch.tensor([[1.0] * 8, [1.0] * 7 + [-1.0], [-1.0] * 8, [1, -1] * 4, [-1, 1] * 4])
    gamma = torch.tensor([1.0, 0.5, 1.0, 1.0, 1.0])
    assert select_filters(binary_view(codes, gamma), 4, "redundancy").keep.tolist() == [0, 2, 3, 4]
    gamma = torch.tensor([0.5, 1.0, 1.0, 1.0, 1.0])
    assert select_filters(binary_view(codes, gamma), 4, "redundancy").keep.tolist() == [1, 2, 3, 4]


def test_l1_keeps_the_large_filters():
    torch.manual_seed(3)
    latent = torch.randn(8, 20)
    latent[[2, 5]] *= 0.01  # planted small norms
    view = LayerView("l", torch.sign(latent), latent, "binary")
    assert select_filters(view, 6, "l1").keep.tolist() == [0, 1, 3, 4, 6, 7]


def test_fpgm_removes_the_filter_nearest_the_geometric_median():
    # four corners of a square and its centre (index 4): the centre is the geometric median
    pts = torch.tensor([[0.0, 0], [0, 4], [4, 0], [4, 4], [2, 2]])
    view = LayerView("l", pts, pts, "levels")
    assert select_filters(view, 4, "fpgm").keep.tolist() == [0, 1, 2, 3]


def test_bn_scale_and_random():
    view = binary_view(torch.ones(5, 3), gamma=torch.tensor([0.3, -2.0, 0.1, 1.0, -0.05]))
    assert select_filters(view, 2, "bn_scale").keep.tolist() == [1, 3]
    a = select_filters(view, 3, "random", seed=0).keep
    assert torch.equal(a, select_filters(view, 3, "random", seed=0).keep)
    draws = {tuple(select_filters(view, 3, "random", seed=s).keep.tolist()) for s in range(20)}
    assert len(draws) > 3  # different seeds, different subsets


def test_unknown_criterion_lists_the_registered_ones():
    with pytest.raises(ValueError, match="registered: " + ", ".join(CRITERIA)):
        select_filters(binary_view(torch.ones(3, 2)), 2, "taylor")
    with pytest.raises(ValueError, match="registered"):
        prune(qmodel("resnet20", "bnn"), 0.5, criterion="taylor")


# --------------------------------------------------------------------------- physical removal
@pytest.mark.parametrize("arch", ["resnet20", "resnet18"])
@pytest.mark.parametrize("scheme", ["bnn", "dorefa"])
@pytest.mark.parametrize("mode", ["block", "stage"])
def test_pruned_logits_equal_masked_reference(arch, scheme, mode):
    model = qmodel(arch, scheme)
    x = torch.randn(2, 1, 28, 28) if arch == "resnet20" else torch.randn(2, 3, 64, 64)
    names = prunable_layers(model, mode)
    ratios = {n: [0.25, 0.5, 0.75][i % 3] for i, n in enumerate(names)}
    pruned = prune(model, ratios, mode=mode).eval()
    with torch.no_grad():
        assert torch.allclose(pruned(x), masked_reference(model, pruned.pruned)(x), atol=1e-4, rtol=1e-4)
    assert pruned is not model and sum(p.numel() for p in pruned.parameters()) < \
        sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("scheme", ["bnn", "dorefa"])
def test_pruned_layers_keep_the_model_dtype(scheme):
    model = qmodel("resnet20", scheme).double()
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    pruned = prune(model, 0.5).eval()
    assert {p.dtype for p in pruned.parameters()} == {torch.float64}
    with torch.no_grad():
        assert torch.allclose(pruned(x), masked_reference(model, pruned.pruned)(x), atol=1e-9)


def test_ratio_zero_leaves_logits_unchanged():
    model = qmodel("resnet20", "bnn")
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(prune(model, 0.0)(x), model(x))


def test_input_model_untouched_unless_inplace():
    model = qmodel("resnet20", "dorefa")
    before = copy.deepcopy(model.state_dict())
    prune(model, 0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    same = prune(model, 0.5, inplace=True)
    assert same is model and model.layer1[0].conv1.out_channels == 8


def test_channel_counts_and_size_by_hand():
    model = qmodel("resnet20", "bnn")
    pruned = prune(model, {"layer1.0.conv1": 0.5, "layer3.2.conv1": 0.3})
    assert pruned.layer1[0].conv1.out_channels == 8 and pruned.layer1[0].conv2.in_channels == 8
    assert pruned.layer1[0].bn1.num_features == 8
    kept = n_keep(64, 0.3)
    assert kept == 44  # floor(0.7 * 64) = 44
    assert pruned.layer3[2].conv1.out_channels == 44 and pruned.layer3[2].conv2.in_channels == 44
    # bytes removed by hand: layer1.0: 8 filters of conv1 (16*9 bits + 32-bit scale each), 8 BN
    # channels (2 x 32 bits), 8 input channels of conv2 (16 filters x 9 bits); layer3.2 likewise, 20 of 64
    removed_bits = 8 * (16 * 9 + 32) + 8 * 64 + 16 * 8 * 9 + 20 * (64 * 9 + 32) + 20 * 64 + 64 * 20 * 9
    assert model_size_bytes(model) - model_size_bytes(pruned) == removed_bits / 8


def test_rounding_rule():
    assert [n_keep(16, r) for r in (0.0, 0.25, 0.3, 0.5, 0.9, 0.99)] == [16, 12, 11, 8, 1, 1]


def test_bad_inputs():
    model = qmodel("resnet20", "bnn")
    for bad in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            prune(model, bad)
    with pytest.raises(ValueError, match="not prunable.*prunable layers: layer1.0.conv1"):
        prune(model, {"layer1.0.conv2": 0.5})
    with pytest.raises(ValueError, match="block, stage"):
        prune(model, 0.5, mode="global")
    with pytest.raises(ValueError, match="frozen, recompute"):
        prune(model, 0.5, scales="learned")


def test_recompute_scales_differ_from_frozen_only_in_the_scales():
    model = qmodel("resnet20", "bnn")
    frozen = prune(model, 0.5, scales="frozen")
    recomputed = prune(model, 0.5, scales="recompute")
    conv2_f, conv2_r = frozen.layer1[0].conv2, recomputed.layer1[0].conv2
    assert torch.equal(conv2_f.weight, conv2_r.weight)
    assert bool(conv2_f.scale_frozen) and not bool(conv2_r.scale_frozen)
    # frozen: alpha over all 16 input channels; recomputed: over the 8 kept ones
    full = model.layer1[0].conv2.weight.abs().mean(dim=(1, 2, 3))
    assert torch.allclose(conv2_f.w_scale, full)
    assert torch.allclose(conv2_r.current_scale(), conv2_r.weight.abs().mean(dim=(1, 2, 3)))


def test_recalibrate_batchnorm_matches_batch_statistics():
    model = qmodel("resnet20", "bnn")
    x = torch.randn(32, 1, 28, 28)
    recalibrate_batchnorm(model, [(x, None)], batches=5)
    stem_out = model.conv1(x)
    assert torch.allclose(model.bn1.running_mean, stem_out.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(model.bn1.running_var, stem_out.var(dim=(0, 2, 3)), atol=1e-4)
    assert not model.training and model.bn1.momentum == 0.1


def test_redundancy_is_fast_enough_on_resnet18_largest_layer():
    """Not a timing test: a smoke check that the vectorised greedy handles 512 filters."""
    model = quantize_model(build_model("resnet18"), "bnn")
    pruned = prune(model, {"layer4.1.conv1": 0.9})
    assert pruned.layer4[1].conv1.out_channels == 51


# --------------------------------------------------------------------------- export
@pytest.mark.parametrize("scheme", ["bnn", "dorefa"])
@pytest.mark.parametrize("ratio", [0.0, 0.5])
def test_export_round_trip_and_size(tmp_path, scheme, ratio):
    pruned = prune(qmodel("resnet20", scheme), ratio).eval()
    path = save_packed(tmp_path / "m.qrpk", pruned)
    loaded, header = load_packed(path)
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded(x), pruned(x), atol=1e-4)
    assert header["pruned"]["kept"] == pruned.pruned["kept"]
    on_disk, counted = path.stat().st_size, model_size_bytes(pruned)
    assert counted <= on_disk <= 1.03 * counted


def test_export_corrupt_file(tmp_path):
    from qrepro.checkpoint import CheckpointError

    path = save_packed(tmp_path / "m.qrpk", prune(qmodel("resnet20", "bnn"), 0.5))
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        load_packed(path)


def test_pruned_checkpoint_round_trip(tmp_path):
    from qrepro.checkpoint import load_checkpoint, save_checkpoint

    pruned = prune(qmodel("resnet20", "dorefa"), 0.5, mode="stage").eval()
    loaded, payload = load_checkpoint(save_checkpoint(tmp_path / "p.pt", pruned))
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))
    assert loaded.pruned == pruned.pruned
