"""``make gpu-check``: the GPU checks in one script (at most about 8 minutes on one H200).

    PYTHONPATH=. python3 benchmarks/gpu_check.py [--json PATH] [--device cuda] [--skip tests study throughput inference]

1. **tests**: the GPU-marked tests of every test module (``pytest -m gpu``), where pytest is installed;
2. **study**: the ``cifar10-resnet20`` preset at ``--limit 512`` on generated CIFAR-shaped data,
   every stage end to end on the device, then ``status`` (every artifact must be fresh);
3. **throughput**: training images/s of BNN and DoReFa 2-bit against full precision, measured
   side by side (ResNet-20 at batch 128 and 1024; ResNet-18 at 28 px, Study v2's network, and at 224 with
   bf16 and channels-last), and one search evaluation of each network (prune, BatchNorm re-estimation,
   1,000 validation images);
4. **inference**: inference time of BNN and DoReFa models pruned by half against unpruned, as
   modules and fused (``qrepro.inference``), beside the MAC ratio (ResNet-20 at batch 1024,
   ResNet-18 at 224 and batch 64): issue 14's inference row on the GPU.

Runs from the source tree on a machine with other versions than the pins (it needs torch,
torchvision, botorch; not papermill).  Writes a JSON summary (``--json``, default
``$OUT/gpu_check.json`` when ``$OUT`` is set, else ``results/_scratch/gpu_check.json``);
exit code 1 if any section failed.  ``--device cpu`` runs the same script here (slowly).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # runs from the source tree, without an install

from timing import count_macs, interleaved_medians  # noqa: E402

from qrepro import study  # noqa: E402
from qrepro.checkpoint import environment_info  # noqa: E402
from qrepro.config import load_study  # noqa: E402
from qrepro.data import load_synthetic  # noqa: E402
from qrepro.device import autocast, resolve_device  # noqa: E402
from qrepro.inference import fuse_for_inference  # noqa: E402
from qrepro.models import build_model  # noqa: E402
from qrepro.objective import PruneObjective  # noqa: E402
from qrepro.prune import prunable_layers, prune  # noqa: E402
from qrepro.quantize import quantize_model  # noqa: E402
from tests.fakes import write_fake_cifar10  # noqa: E402


def section_tests(device) -> dict:
    try:
        import pytest  # noqa: F401
    except ImportError:
        return {"skipped": "pytest is not installed here"}
    # every test module with GPU-marked tests, not the whole suite: the others import packages (papermill,
    # Dask) a GPU machine may lack, and one failed import stops the collection
    files = sorted(str(f) for f in (REPO / "tests").glob("test_*.py") if "mark.gpu" in f.read_text())
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfE", "--tb=short", "-m", "gpu", "-p", "no:cacheprovider",
                          *files], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    tail = (run.stdout + run.stderr).strip().splitlines()[-200:]  # enough to say why each failure failed
    print("\n".join(tail[-40:]))
    return {"returncode": run.returncode, "tail": tail, "ok": run.returncode == 0}


def section_study(device, limit: int = 512) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = write_fake_cifar10(Path(tmp) / "data", per_batch=limit // 4)
        cfg = dataclasses.replace(load_study("cifar10-resnet20").shrunk(limit), device=str(device),
                                  skip_integrity_check=True)  # the stand-in files fail torchvision's MD5 check
        t0 = time.time()
        log = study.run_study(preset=cfg, root=Path(tmp) / "results", data_root=data, progress=False)
        seconds = json.loads(log.read_text())["runs"][-1]["seconds"]
        lines, code = study.status_lines(cfg, Path(tmp) / "results", data)
    return {"ok": code == 0, "stage_seconds": seconds, "total_seconds": time.time() - t0,
            "status_exit": code, "status_summary": lines[-1] if code == 0 else lines}


def _train_rate(model, x, y, steps: int, bf16: bool, device) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step():
        with autocast(device, bf16):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * len(y) / (time.perf_counter() - t)


def section_throughput(device, steps: int = 20) -> dict:
    rows = {}
    study_v2 = {"in_channels": 1, "num_classes": 10}  # Study v2's network: ResNet-18 on 28x28 Fashion-MNIST
    settings = [("resnet20", 128, (1, 28, 28), False, False, {"in_channels": 1}),
                ("resnet20", 1024, (1, 28, 28), False, False, {"in_channels": 1}),
                ("resnet18", 128, (1, 28, 28), False, False, study_v2),
                ("resnet18", 256, (3, 224, 224), True, True, {})]
    if device.type != "cuda":
        settings = settings[:1]
    for arch, batch, shape, bf16, cl, kwargs in settings:
        torch.manual_seed(0)
        fp = build_model(arch, **kwargs)
        models = {"fp": fp, "bnn": quantize_model(fp, "bnn"), "dorefa": quantize_model(fp, "dorefa")}
        x = torch.randn(batch, *shape, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        if cl and device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        rates = {k: [] for k in models}
        for k, m in models.items():
            m.to(device)
            if cl and device.type == "cuda":
                m.to(memory_format=torch.channels_last)
        for _ in range(3):  # interleaved rounds share the machine's state
            for k, m in models.items():
                rates[k].append(_train_rate(m, x, y, steps, bf16, device))
        med = {k: statistics.median(v) for k, v in rates.items()}
        name = f"{arch}_b{batch}_{shape[-1]}px" + ("_bf16_cl" if bf16 else "")
        rows[name] = {"images_per_s": med, "bnn_over_fp": med["bnn"] / med["fp"],
                      "dorefa_over_fp": med["dorefa"] / med["fp"]}
        print(f"{name}: fp {med['fp']:.0f} img/s, BNN x{rows[name]['bnn_over_fp']:.2f}, "
              f"DoReFa x{rows[name]['dorefa_over_fp']:.2f}")
    rows["search_evaluation_seconds"] = {arch: _evaluation_seconds(device, arch, kwargs)
                                         for arch, kwargs in [("resnet20", {"in_channels": 1}),
                                                              ("resnet18", study_v2)]}
    print("one search evaluation: " + ", ".join(f"{a} {s:.3f} s" for a, s in rows["search_evaluation_seconds"].items()))
    return {"ok": True, **rows}


def _evaluation_seconds(device, arch: str, kwargs: dict) -> float:
    """One search evaluation of a BNN ``arch`` on 28x28 images: prune, BatchNorm re-estimation, 1,000 images."""
    splits = load_synthetic(n_train=2048, n_test=128, image_size=28, batch_size=128, val_size=1024).to(device)
    model = quantize_model(build_model(arch, **{**kwargs, "num_classes": 4}), "bnn").to(device)
    obj = PruneObjective(model, splits, bn_batches=5, val_images=1000)
    ratios = {n: 0.4 for n in prunable_layers(model)}
    obj(ratios)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        obj(ratios)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def section_inference(device, repeats: int = 20) -> dict:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def synced(net):  # a forward that returns when the device has finished it
        return lambda x: (net(x), sync())[0]

    rows = {}
    settings = [("resnet20", 1024, (1, 28, 28)), ("resnet18", 64, (3, 224, 224))]
    if device.type != "cuda":
        settings = [("resnet20", 256, (1, 28, 28))]
    for arch, batch, shape in settings:
        for scheme in ("bnn", "dorefa"):
            torch.manual_seed(0)
            model = quantize_model(build_model(arch, **({"in_channels": shape[0]} if arch == "resnet20" else {})),
                                   scheme).eval()
            pruned = prune(model, 0.5).eval()
            x = torch.randn(batch, *shape)
            macs = count_macs(pruned, x[:1]) / count_macs(model, x[:1])
            model, pruned, x = model.to(device), pruned.to(device), x.to(device)
            nets = {"modules": model, "modules_pruned": pruned, "fused": fuse_for_inference(model),
                    "fused_pruned": fuse_for_inference(pruned)}
            # interleaved, after a warm-up call each: the four forms share the device's state
            ms = {k: 1000 * t for k, t in interleaved_medians({k: synced(n) for k, n in nets.items()}, x,
                                                                repeats).items()}
            name = f"{arch}_b{batch}_{scheme}"
            rows[name] = {"ms": ms, "mac_ratio": macs, "modules_time_ratio": ms["modules_pruned"] / ms["modules"],
                          "fused_time_ratio": ms["fused_pruned"] / ms["fused"], "fused_speedup": ms["modules"] / ms["fused"]}
            print(f"{name}: pruned/unpruned time, modules {rows[name]['modules_time_ratio']:.2f}, fused "
                  f"{rows[name]['fused_time_ratio']:.2f} (MAC ratio {macs:.2f}); fused x{rows[name]['fused_speedup']:.2f}")
    return {"ok": True, **rows}


SECTIONS = {"tests": section_tests, "study": section_study, "throughput": section_throughput,
            "inference": section_inference}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else \
        REPO / "results" / "_scratch" / "gpu_check.json"
    parser.add_argument("--json", type=Path, default=default)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--skip", nargs="*", default=[], choices=list(SECTIONS))
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    summary = {"environment": environment_info(), "device": str(device), "sections": {}}
    if device.type == "cuda":
        summary["gpu"] = torch.cuda.get_device_name(device)
    for name, fn in SECTIONS.items():
        if name in args.skip:
            continue
        print(f"== {name}", flush=True)
        t0 = time.time()
        try:
            summary["sections"][name] = fn(device)
        except Exception as err:  # record it and go on: one broken section must not hide the others
            summary["sections"][name] = {"ok": False, "error": f"{type(err).__name__}: {err}",
                                         "traceback": traceback.format_exc()[-3000:]}
            print(summary["sections"][name]["traceback"], file=sys.stderr)
        summary["sections"][name]["seconds"] = time.time() - t0
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2, default=str))
    failed = [n for n, s in summary["sections"].items() if s.get("ok") is False]
    print(f"summary: {args.json}; " + (f"FAILED: {', '.join(failed)}" if failed else "all sections passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
