"""Any CNN a user brings: torchvision's ResNet-18 / ResNet-50 / MobileNetV2 / VGG-11-BN, a CIFAR
ResNet with ``shortcut`` projections and a plain CNN are quantized, pruned (per layer and per
coupled group) against a masked reference, size-accounted, saved, loaded, exported and fused;
the dependency graph gives the hand-written ResNet groups; what it cannot handle is refused."""
import pytest
import torch
import torch.nn as nn

from networks import masked_reference, randomize_bn
from qrepro.checkpoint import load_checkpoint, save_checkpoint
from qrepro.export import load_packed, save_packed
from qrepro.graph import channel_groups
from qrepro.inference import fuse_for_inference
from qrepro.models import build_model
from qrepro.objective import PruneObjective
from qrepro.prune import PruneError, prunable_layers, prune, recalibrate_batchnorm
from qrepro.quantize import quantize_model
from qrepro.size import SizeModel, model_size_bytes

# name: (builder, kwargs, input shape, scheme).  Not ternary: its threshold (0.7 mean|w|) is recomputed over a
# reader's remaining inputs, so a pruned ternary reader is not the masked one (tests/test_ternary.py)
NETWORKS = {
    "resnet18": ("torchvision.models:resnet18", {"num_classes": 10}, (2, 3, 32, 32), "bnn"),
    "resnet50": ("torchvision.models:resnet50", {"num_classes": 10}, (2, 3, 32, 32), "dorefa"),
    "mobilenet_v2": ("torchvision.models:mobilenet_v2", {"num_classes": 10}, (2, 3, 32, 32), "bnn"),
    "mobilenet_v2-dorefa": ("torchvision.models:mobilenet_v2", {"num_classes": 10}, (2, 3, 32, 32), "dorefa"),
    "vgg11_bn": ("networks:vgg11_bn_small", {"num_classes": 10}, (2, 3, 32, 32), "dorefa"),
    "shortcut-resnet": ("networks:ShortcutResNet", {"num_classes": 10}, (2, 1, 28, 28), "bnn"),
    "plain-cnn": ("networks:PlainCNN", {"num_classes": 10}, (2, 1, 28, 28), "dorefa"),
}
RATIOS = (0.25, 0.5, 0.75)


def quantized(name, seed=0):
    builder, kwargs, shape, scheme = NETWORKS[name]
    torch.manual_seed(seed)
    model = quantize_model(build_model(builder, **kwargs), scheme)
    return randomize_bn(model, seed).double().eval(), torch.randn(*shape, dtype=torch.float64)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_pruned_network_computes_the_masked_reference_and_survives_every_round_trip(name, tmp_path):
    model, x = quantized(name)
    for mode in ("block", "stage"):
        groups = [g for g in channel_groups(model) if g.prunable and g.coupled == (mode == "stage")]
        if not groups:
            continue
        ratios = {g.name: RATIOS[i % 3] for i, g in enumerate(groups)}
        pruned = prune(model, ratios, mode=mode).eval()
        with torch.no_grad():
            torch.testing.assert_close(pruned(x), masked_reference(model, pruned.pruned)(x), atol=1e-9, rtol=1e-9)
        assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    # block mode again, through every consumer of a pruned model
    layers = prunable_layers(model)
    ratios = {n: RATIOS[i % 3] for i, n in enumerate(layers)}
    pruned = prune(model, ratios).eval()
    with torch.no_grad():
        fused = fuse_for_inference(pruned, channels_last=False)
        torch.testing.assert_close(fused(x), pruned(x), atol=1e-9, rtol=1e-9)
        pruned, x = pruned.float(), x.float()  # files hold float32 models
        expected = pruned(x)
        loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "m.pt", pruned))
        torch.testing.assert_close(loaded(x), expected, atol=0, rtol=0)
        save_packed(tmp_path / "m.qrpk", pruned)
        torch.testing.assert_close(load_packed(tmp_path / "m.qrpk")[0](x), expected, atol=1e-5, rtol=1e-5)
    recalibrate_batchnorm(pruned, [(x, None)], 1)


@pytest.mark.parametrize("name", ["mobilenet_v2", "vgg11_bn", "plain-cnn"])
def test_size_model_predicts_the_pruned_size_to_the_byte(name):
    model, _ = quantized(name)
    layers = prunable_layers(model)[:4]
    ratios = [0.3, 0.5, 0.0, 0.7][:len(layers)]
    size_model = SizeModel.from_model(model, layers)
    pruned = prune(model, dict(zip(layers, ratios)))
    assert size_model.exact_size(ratios) == model_size_bytes(pruned)
    # the search's linear constraint bounds the size from above wherever searched layers share weights
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        r = torch.rand(len(layers), generator=g, dtype=torch.float64) * 0.8
        assert size_model.exact_size(r.tolist()) <= size_model.linear_size(r, 0.8).item() + 1e-6


def hand_written_resnet_groups(model, stem="conv1"):
    """The ResNet groups as qrepro's hand-written grouping defined them before the graph:
    block mode, each basic block's ``conv1``; stage mode, every writer of a stage's residual
    stream (the stem or the projection, and each block's ``conv2``) and every reader of it."""
    stages = [s for s in ("layer1", "layer2", "layer3", "layer4") if hasattr(model, s)]
    blocks = {s: [f"{s}.{i}" for i in range(len(getattr(model, s)))] for s in stages}
    block = {f"{b}.conv1": ([f"{b}.conv1"], [f"{b}.bn1"], [f"{b}.conv2"]) for s in stages for b in blocks[s]}
    stage = {}
    for k, s in enumerate(stages):
        first = blocks[s][0]
        projected = model.get_submodule(first).downsample is not None
        writers = [f"{first}.downsample.0"] if projected else [stem]
        norms = [f"{first}.downsample.1"] if projected else ["bn1"]
        writers += [f"{b}.conv2" for b in blocks[s]]
        norms += [f"{b}.bn2" for b in blocks[s]]
        readers = [f"{b}.conv1" for b in (blocks[s][1:] if projected else blocks[s])]
        if k + 1 < len(stages):
            readers += [f"{stages[k + 1]}.0.conv1", f"{stages[k + 1]}.0.downsample.0"]
        else:
            readers.append("fc")
        stage[s] = (writers, norms, readers)
    return block, stage


@pytest.mark.parametrize("arch,kwargs", [("resnet20", {"in_channels": 1}), ("resnet18", {"num_classes": 10})])
def test_the_graph_finds_the_hand_written_resnet_groups(arch, kwargs):
    model = build_model(arch, **kwargs)
    block, stage = hand_written_resnet_groups(model)
    found = {g.name: (sorted(g.writers), sorted(g.norms), sorted(g.readers)) for g in channel_groups(model)
             if g.prunable}
    expected = {n: tuple(sorted(v) for v in t) for n, t in {**block, **stage}.items()}
    assert found == expected
    assert prunable_layers(model) == list(block) and prunable_layers(model, "stage") == list(stage)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:  # Python control flow on a tensor's value
            x = -x
        return self.fc(self.conv(x).mean((2, 3)))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(torch.cat([self.a(x), self.b(x)], 1).mean((2, 3)))


def test_what_the_graph_cannot_handle_is_refused_with_one_line():
    with pytest.raises(PruneError, match=r"cannot be traced by torch\.fx .*control flow") as err:
        prune(Branchy(), 0.5)
    assert "\n" not in str(err.value)
    with pytest.raises(PruneError, match=r"no prunable group in mode 'block'.*kept whole: a: cat is an operation"):
        prune(Concat(), 0.5)
    with pytest.raises(PruneError, match="cannot be traced"):
        PruneObjective(Branchy(), splits=None)  # refused before it reads its data


def test_a_model_without_an_arch_record_names_the_call_that_gives_it_one(tmp_path):
    with pytest.raises(ValueError, match=r"build_model\('package.module:builder'"):
        save_checkpoint(tmp_path / "m.pt", nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(ValueError, match="not an nn.Module class or a function annotated"):
        build_model("os:getcwd")
    with pytest.raises(ValueError, match="cannot be found"):
        build_model("no_such_module_here:Net")
