"""Benchmark sections train and compile: training throughput of the quantized ResNet-20s against full
precision, and torch.compile of the training step against eager."""
from __future__ import annotations

import copy
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from timing import KEYS, ratio_quartiles

from qrepro.models import build_model
from qrepro.quantize import quantize_model


def bench_train(repeats: int):
    torch.manual_seed(0)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    fp = build_model("resnet20", in_channels=1)
    models = {"full precision": fp, "BNN": quantize_model(fp, "bnn"), "DoReFa 2-bit": quantize_model(fp, "dorefa")}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01) for k, m in models.items()}

    def step(name):
        m = models[name]
        m.train()
        loss = F.cross_entropy(m(x), y)
        opts[name].zero_grad()
        loss.backward()
        opts[name].step()

    for name in models:
        step(name)  # warm-up
    times = {k: [] for k in models}
    for _ in range(repeats):  # interleaved: each round measures all three under the same load
        for name in models:
            t = time.perf_counter()
            step(name)
            times[name].append(time.perf_counter() - t)
    base = 128 / statistics.median(times["full precision"])
    print("\n## Training throughput, ResNet-20, batch 128 of 1x28x28 (median of", repeats, "steps)")
    print("(spread: the quartiles of the round-by-round ratios, each round timing the three models one after another)")
    print("| model | images/s | ratio to full precision | spread |\n|---|---|---|---|")
    rows = {}
    for name, ts in times.items():
        ips = 128 / statistics.median(ts)
        q1, q3 = ratio_quartiles(times["full precision"], ts)
        print(f"| {name} | {ips:.0f} | {ips / base:.2f} | {q1:.2f}-{q3:.2f} |")
        rows[f"train_images_per_s_{KEYS[name]}"] = ips
        rows[f"train_ratio_{KEYS[name]}_over_fp"] = ips / base
        rows[f"train_ratio_{KEYS[name]}_over_fp_quartiles"] = [q1, q3]
    return rows


def bench_compile(repeats: int):
    """``torch.compile`` (inductor) against eager for one training step of each ResNet-20, batch 128:
    compile time (less on a second run: inductor caches on disk), step-time speed-up, the epochs of
    Fashion-MNIST after which compiling pays, and how far the two copies' weights drift apart, beside
    how far an eager copy in channels-last layout drifts (the same function summed in another order).
    Then the float64 gradients of one step, channels-last eager and compiled against eager."""
    torch.manual_seed(0)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    fp = build_model("resnet20", in_channels=1)
    bases = {"full precision": fp, "BNN": quantize_model(fp, "bnn"), "DoReFa 2-bit": quantize_model(fp, "dorefa")}
    steps_per_epoch = 55000 // 128
    print("\n## torch.compile of the training step, ResNet-20, batch 128 of 1x28x28 (median of", repeats, "steps)")
    print("| model | compile s | eager step ms | compiled step ms | speed-up | pays after (epochs) | "
          "largest weight difference after the steps | the same, eager in channels-last |\n"
          "|---|---|---|---|---|---|---|---|")
    rows = {}
    for name, base in bases.items():
        eager, compiled = copy.deepcopy(base), copy.deepcopy(base)
        nets = {"eager": eager, "compiled": torch.compile(compiled)}
        opts = {k: torch.optim.SGD((eager if k == "eager" else compiled).parameters(), lr=0.01) for k in nets}

        def step(k):
            loss = F.cross_entropy(nets[k](x), y)
            opts[k].zero_grad()
            loss.backward()
            opts[k].step()

        step("eager")
        control = copy.deepcopy(base).to(memory_format=torch.channels_last)
        control_opt = torch.optim.SGD(control.parameters(), lr=0.01)
        x_cl = x.contiguous(memory_format=torch.channels_last)

        def control_step():  # eager in channels-last: untimed, it takes the same steps
            loss = F.cross_entropy(control(x_cl), y)
            control_opt.zero_grad()
            loss.backward()
            control_opt.step()

        control_step()
        t0 = time.perf_counter()
        step("compiled")  # the first call compiles
        compile_s = time.perf_counter() - t0
        times = {k: [] for k in nets}
        for _ in range(repeats):
            for k in nets:
                t = time.perf_counter()
                step(k)
                times[k].append(time.perf_counter() - t)
            control_step()
        te, tc = statistics.median(times["eager"]), statistics.median(times["compiled"])
        pays = compile_s / max(1e-9, te - tc) / steps_per_epoch if te > tc else float("inf")
        key = KEYS[name]
        # both took the same 2 + repeats steps on the same batch from the same weights
        diff = max((a - b).abs().max().item() for a, b in zip(eager.parameters(), compiled.parameters()))
        control_diff = max((a - b).abs().max().item() for a, b in zip(eager.parameters(), control.parameters()))
        rows.update({f"compile_seconds_{key}": compile_s, f"compiled_step_speedup_{key}": te / tc,
                     f"compile_pays_after_epochs_{key}": pays, f"compiled_max_weight_difference_{key}": diff,
                     f"channels_last_max_weight_difference_{key}": control_diff})
        print(f"| {name} | {compile_s:.0f} | {1000 * te:.0f} | {1000 * tc:.0f} | {te / tc:.2f} | {pays:.1f} | "
              f"{diff:.1e} | {control_diff:.1e} |")
    rows.update(_float64_gradient_gaps(bases))
    return rows


def _float64_gradient_gaps(bases: dict) -> dict:
    """One float64 training step's largest gradient difference from eager (NCHW): eager in channels-last
    and compiled, with BatchNorm's affine terms at their initial (1, 0) and drawn away from them.  At (1, 0)
    a DoReFa network meets exact ties (a convolution's output equal to its channel's batch mean, so a
    ReLU or a clip sees exactly 0) and the summation order picks the side; drawn, there are none."""
    print("\n### One training step in float64: largest gradient difference from eager (batch 8)")
    print("| model | BatchNorm affine terms | eager, channels-last | compiled |\n|---|---|---|---|")
    rows = {}
    for name in ("BNN", "DoReFa 2-bit"):
        for affine in ("initial (1, 0)", "drawn"):
            torch.manual_seed(0)
            model = copy.deepcopy(bases[name]).double().train()
            if affine == "drawn":
                for m in model.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.weight.data.uniform_(0.5, 1.5)
                        m.bias.data.normal_(0, 0.3)
            x, y = torch.randn(8, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (8,))
            grads = {}
            for form in ("eager", "channels_last", "compiled"):
                m = copy.deepcopy(model)
                xx = x
                if form == "channels_last":
                    m, xx = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
                F.cross_entropy((torch.compile(m) if form == "compiled" else m)(xx), y).backward()
                grads[form] = [p.grad for p in m.parameters()]
            gap = {form: max((a - b).abs().max().item() for a, b in zip(grads["eager"], grads[form]))
                   for form in ("channels_last", "compiled")}
            print(f"| {name} | {affine} | {gap['channels_last']:.1e} | {gap['compiled']:.1e} |")
            tag = f"{KEYS[name]}_{'init' if affine.startswith('initial') else 'drawn'}"
            rows.update({f"float64_gradient_gap_channels_last_{tag}": gap["channels_last"],
                         f"float64_gradient_gap_compiled_{tag}": gap["compiled"]})
    return rows
