"""The same code on a CUDA device: pruning, the criteria, training steps, the objective and the
in-memory loader give what they give on the CPU (within float tolerance).  Skipped without CUDA;
``make gpu-check`` runs them on a GPU machine."""
import copy

import pytest
import torch
from test_inference import model_with_statistics

from qrepro.data import load_splits
from qrepro.models import build_model
from qrepro.objective import PruneObjective
from qrepro.prune import prunable_layers, prune
from qrepro.quantize import quantize_model
from qrepro.train import TrainConfig, train

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def qmodel(scheme, arch="resnet20"):
    torch.manual_seed(0)
    kwargs = {"in_channels": 1} if arch == "resnet20" else {"num_classes": 10}
    return quantize_model(build_model(arch, **kwargs), scheme).eval()


@pytest.mark.parametrize("scheme", ["bnn", "dorefa"])
@pytest.mark.parametrize("criterion", ["redundancy", "fpgm", "l1", "bn_scale", "random"])
def test_prune_on_cuda_keeps_the_device_and_matches_the_cpu(scheme, criterion):
    cpu = qmodel(scheme)
    gpu = copy.deepcopy(cpu).to(CUDA)
    p_cpu, p_gpu = prune(cpu, 0.5, criterion), prune(gpu, 0.5, criterion)
    assert p_cpu.pruned["kept"] == p_gpu.pruned["kept"]
    assert {p.device.type for p in p_gpu.parameters()} == {"cuda"}
    assert {b.device.type for b in p_gpu.buffers()} == {"cuda"}
    # the same pruned network, tensor for tensor (not its outputs: CPU and GPU convolutions round differently,
    # and a binary network's signs amplify any difference), to 1e-6: the kept weights are copies, but the
    # quantizers' scales are means that the GPU reduces in another order
    gpu_state, cpu_state = p_gpu.state_dict(), p_cpu.state_dict()
    assert gpu_state.keys() == cpu_state.keys()
    for name, t in cpu_state.items():
        torch.testing.assert_close(gpu_state[name].cpu(), t, rtol=1e-6, atol=0, msg=lambda m, name=name: f"{name}: {m}")
    with torch.no_grad():
        assert p_gpu(torch.randn(4, 1, 28, 28, device=CUDA)).shape == (4, 10)


def test_in_memory_loader_on_cuda_serves_the_cpu_batches():
    splits = load_splits("synthetic", batch_size=16)
    on_gpu = splits.to(CUDA)
    for (xc, yc), (xg, yg) in zip(splits.train, on_gpu.train):
        assert xg.device.type == "cuda" and torch.equal(yc, yg.cpu())
        # the same images, order and augmentation; CUDA divides by a scalar's reciprocal, so the last bit may differ
        torch.testing.assert_close(xg.cpu(), xc, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bf16", [False, True])
def test_training_on_cuda(bf16):
    splits = load_splits("synthetic", batch_size=32).to(CUDA)
    model = qmodel("bnn").to(CUDA)
    cfg = TrainConfig(epochs=1, optimizer="adam", lr=1e-3, weight_decay=0.0, bf16=bf16, channels_last=True)
    history = train(model, splits, cfg, progress=False, max_steps=4)
    assert history[-1]["steps"] == 4 and 0 <= history[-1]["val_acc"] <= 100


def test_objective_on_cuda_equals_the_cpu():
    splits = load_splits("synthetic", batch_size=32)
    model = qmodel("dorefa")
    ratios = {n: 0.5 for n in prunable_layers(model)}
    cpu = PruneObjective(model, splits, bn_batches=2, val_images=64, device="cpu")(ratios)
    gpu = PruneObjective(model, splits.to(CUDA), bn_batches=2, val_images=64, device="cuda")(ratios)
    assert abs(cpu - gpu) <= 100 / 64 + 1e-9  # at most one image may flip at float tolerance


@pytest.mark.parametrize("scheme", ["bnn", "dorefa"])
def test_fused_inference_on_cuda_computes_what_the_model_computes(scheme, monkeypatch):
    """The fused copy (qrepro.inference) of a pruned model on the GPU: the GPU model's outputs within float
    tolerance (in full float32: TF32's 10-bit products would move values across the quantizers' thresholds),
    every tensor on the device; column folding is for CPUs and stays off."""
    from qrepro.inference import fuse_for_inference

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)

    # BatchNorm away from its initial (0, 1, 1, 0), whose integer sums tie at 0; float32 on the GPU
    model = prune(model_with_statistics("resnet20", scheme).float(), 0.5).eval().to(CUDA)
    fused = fuse_for_inference(model)
    assert {b.device.type for b in fused.buffers()} == {"cuda"}
    x = torch.randn(64, 1, 28, 28, device=CUDA)
    with torch.no_grad():
        out, ref = fused(x), model(x)
    assert out.device.type == "cuda" and out.shape == ref.shape
    # a value within rounding of a sign's or a round's threshold may land on the other side: compare predictions
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.95
    assert (out - ref).abs().median() < 1e-3
