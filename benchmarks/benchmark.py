"""Speed figures, measured side by side in one run and printed as ratios (not tests).

    python benchmarks/benchmark.py [--sections train compile criteria inference search cluster regret gpu] [--repeats N]
                                   [--json PATH]

* train: training throughput (images/s) of BNN and 2-bit DoReFa ResNet-20 against full
  precision, on the same Fashion-MNIST-sized batches, interleaved to share the noise;
* compile: ``torch.compile`` of the training step against eager (``TrainConfig.compile``): compile
  time, speed-up, and the epochs after which compiling pays;
* criteria: filter-selection time per layer of ResNet-18 for every criterion;
* inference: CPU inference time of ResNet-20 pruned by half against the unpruned model,
  with the ratio of multiply-accumulate counts beside it, as modules and fused
  (``qrepro.inference``), and the fused form's speed-up; then each stage's 3x3 convolutions alone,
  unpruned and with the inner width halved (what bounds the pruned model's time), the narrow one
  also column-folded as the fused form runs it where this CPU's vectors allow
  (``qrepro.inference.fold_factors``), and a 3x3 convolution of 3-16 filters plain and folded by 2 and 4;
* search: BoTorch time per proposal (GP fit + acquisition) at 9 and 12 dimensions with 60
  observations, against one candidate evaluation of ResNet-20 on Fashion-MNIST: closed-form LogEI
  (``qrepro.acquisition``, the default) against Monte Carlo qLogNEI (before), with a pending point
  (two workers), and while two other processes keep both cores busy, on one thread (what
  ``qrepro.search`` does) against two threads (what it did before);
* cluster: wall time of a 40-evaluation asynchronous BO search on a Dask LocalCluster with 2
  workers against 1 (and one worker per GPU where CUDA is present), and the GP refit time
  against one evaluation: past 1 / that ratio workers, BO itself is the bottleneck;
* regret: BO, random search and the uniform ratio on a 12-layer function with a known optimum
  under the linear size constraint (median regret over seeds): the check that speeding up the
  BO loop did not make it search worse;
* gpu (where CUDA is present, else one line saying so): the GPU rows of issue 14, from
  ``benchmarks/gpu_check.py``'s throughput section: BNN and DoReFa training throughput against
  full precision on the GPU (ResNet-20 at batch 128 and 1024, ResNet-18 at 224 in bf16,
  channels-last), and one search evaluation's time.

Every row is also written to ``--json PATH`` (keys named after the rows).
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from qrepro.checkpoint import environment_info
from qrepro.criteria import CRITERIA, select_filters
from qrepro.models import build_model
from qrepro.prune import layer_view, prune, prune_groups
from qrepro.quantize import quantize_model


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of convolutions and linear layers for input ``x``."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


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
        q1, q3 = _ratio_quartiles(times["full precision"], ts)
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


def bench_criteria(repeats: int):
    model = quantize_model(build_model("resnet18"), "bnn")
    groups = prune_groups(model, "block")
    rows = {}
    print("\n## Criterion selection time per layer, BNN ResNet-18, ratio 0.5 (median of", repeats, "runs, ms)")
    print("| layer | filters x dims | " + " | ".join(CRITERIA) + " |")
    print("|---|---|" + "---|" * len(CRITERIA))
    for name, g in groups.items():
        view = layer_view(model, g)
        ms = [1000 * timed(lambda c=c: select_filters(view, view.n // 2, c), repeats) for c in CRITERIA]
        print(f"| {name} | {view.n} x {view.codes.shape[1]} | " + " | ".join(f"{t:.1f}" for t in ms) + " |")
        rows.update({f"criterion_ms_{c}_{name}": t for c, t in zip(CRITERIA, ms)})
    return rows


def _interleaved_times(nets: dict, x: torch.Tensor, repeats: int) -> dict:
    """Each net's forward times on ``x``, round by round (after one warm-up or compiling call each), the
    nets interleaved so that they share the machine's noise."""
    times = {k: [] for k in nets}
    with torch.no_grad():
        for net in nets.values():
            net(x)
        for _ in range(repeats):
            for k, net in nets.items():
                times[k].append(timed(lambda net=net: net(x), 1))
    return times


def _interleaved_medians(nets: dict, x: torch.Tensor, repeats: int) -> dict:
    """Median forward time of each net on ``x``, interleaved (:func:`_interleaved_times`)."""
    return {k: statistics.median(v) for k, v in _interleaved_times(nets, x, repeats).items()}


def _ratio_quartiles(numerators: list, denominators: list) -> list:
    """Quartiles ``[q1, q3]`` of the round-by-round ratios ``numerators[i] / denominators[i]``: how far one
    run's ratio of medians can be trusted."""
    ratios = [a / b for a, b in zip(numerators, denominators)]
    if len(ratios) < 2:
        return ratios * 2
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return [q1, q3]


def bench_inference(repeats: int):
    from qrepro.inference import fuse_for_inference

    torch.manual_seed(0)
    x = torch.randn(256, 1, 28, 28)
    print("\n## CPU inference, ResNet-20 pruned by half (block mode) against unpruned, batch 256")
    print("(modules: the training form in eval mode; fused: qrepro.inference.fuse_for_inference, weights "
          "pre-quantized, BatchNorm and scales folded; spread: the quartiles of the round-by-round time ratios)")
    print("| model | form | unpruned ms | pruned ms | time ratio | spread | MAC ratio | fused speed-up (unpruned) |\n"
          "|---|---|---|---|---|---|---|---|")
    rows = {}

    def row(scheme, form, unpruned, pruned, key, macs, speedup=""):
        """Print one table row from two nets' round-by-round times; the ratio of medians and its quartiles
        go to ``rows[key]`` and ``rows[key + "_quartiles"]``. Returns the unpruned median."""
        a, b = statistics.median(unpruned), statistics.median(pruned)
        q1, q3 = _ratio_quartiles(pruned, unpruned)
        print(f"| {scheme} | {form} | {1000 * a:.1f} | {1000 * b:.1f} | {b / a:.2f} | {q1:.2f}-{q3:.2f} | "
              f"{macs:.2f} | {speedup} |")
        rows[key], rows[f"{key}_quartiles"] = b / a, [q1, q3]
        return a

    for scheme in ("bnn", "dorefa"):
        model = quantize_model(build_model("resnet20", in_channels=1), scheme).eval()
        pruned = prune(model, 0.5).eval()
        nets = {"model": model, "pruned": pruned, "fused": fuse_for_inference(model),
                "fused_pruned": fuse_for_inference(pruned), "unfolded": fuse_for_inference(model, fold=False),
                "unfolded_pruned": fuse_for_inference(pruned, fold=False)}
        t = _interleaved_times(nets, x, repeats)
        macs = count_macs(pruned, x[:1]) / count_macs(model, x[:1])
        rows[f"pruned_half_mac_ratio_{scheme}"] = macs
        modules = statistics.median(t["model"])
        speedup = modules / statistics.median(t["fused"])
        row(scheme, "modules", t["model"], t["pruned"], f"pruned_half_time_ratio_{scheme}", macs)
        row(scheme, "fused", t["fused"], t["fused_pruned"], f"fused_pruned_half_time_ratio_{scheme}", macs,
            f"{speedup:.2f}")
        row(scheme, "fused, no column folding", t["unfolded"], t["unfolded_pruned"],
            f"fused_unfolded_pruned_half_time_ratio_{scheme}", macs)
        rows[f"fused_speedup_{scheme}"] = speedup
        # one thread: the pruned model's smaller convolutions split less well over two threads
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            one = _interleaved_times({k: nets[k] for k in ("fused", "fused_pruned")}, x, repeats)
        finally:
            torch.set_num_threads(threads)
        row(scheme, "fused, 1 thread", one["fused"], one["fused_pruned"],
            f"fused_pruned_half_time_ratio_{scheme}_1thread", macs)
        # torch.compile (inductor) of the fused forms: elementwise work fused around the convolutions
        comp = _interleaved_times({k: torch.compile(nets[k]) for k in ("fused", "fused_pruned")}, x, repeats)
        compiled = statistics.median(comp["fused"])
        row(scheme, "fused, compiled", comp["fused"], comp["fused_pruned"],
            f"fused_compiled_pruned_half_time_ratio_{scheme}", macs, f"{modules / compiled:.2f}")
        rows[f"fused_compiled_speedup_{scheme}"] = modules / compiled
    rows.update(_bench_block_convolutions(x.shape[0], repeats))
    rows.update(_bench_column_folding(x.shape[0], repeats))
    return rows


def _bench_column_folding(batch: int, repeats: int) -> dict:
    """A 3x3 convolution with few filters (channels-last, float32), plain and column-folded by 2 and 4
    (``qrepro.inference.fold_weight``), by filter count: the evidence behind ``fold_factors``' rule."""
    from qrepro.inference import fold_factors, fold_weight

    print(f"\n### Column folding by filter count (3x3, stride 1, batch {batch}; what fold_factors picks here: *)")
    print("| input | filters | plain ms | folded by 2 ms | folded by 4 ms |\n|---|---|---|---|---|")
    rows = {}
    cl = torch.channels_last
    for c, hw in ((16, 28), (8, 28), (32, 14)):
        x = torch.randn(batch, c, hw, hw).to(memory_format=cl)
        for n in (3, 4, 6, 8, 12, 16):
            w = torch.randn(n, c, 3, 3)
            convs = {1: lambda x, w=w.to(memory_format=cl): F.conv2d(x, w, padding=1)}
            for f in (2, 4):
                if hw % f == 0 and f * n <= 32:
                    wf = fold_weight(w, None, f)[0].to(memory_format=cl)
                    convs[f] = lambda x, wf=wf, f=f: F.conv2d(x, wf, stride=(1, f), padding=1)
            ms = {f: 1000 * t for f, t in _interleaved_medians(convs, x, repeats).items()}
            picked = next((f for f in fold_factors(n) if hw % f == 0), 1)
            cells = [f"{ms[f]:.2f}{' *' if f == picked else ''}" if f in ms else "" for f in (1, 2, 4)]
            print(f"| {c} x {hw} x {hw} | {n} | " + " | ".join(cells) + " |")
            rows.update({f"fold_{c}x{hw}_filters{n}_ms_by{f}": t for f, t in ms.items()})
    return rows


def _bench_block_convolutions(batch: int, repeats: int) -> dict:
    """The 3x3 convolutions of ResNet-20's blocks (channels-last, float32), unpruned and with the inner
    width halved, side by side: where the pruned model's time goes against the MAC ratio of 0.5.  The
    narrow ``c -> c/2`` also column-folded (``qrepro.inference.fold_weight``) by 2, as the fused form
    runs it where ``fold_factors`` allows (the pair ratio counts it there)."""
    from qrepro.inference import fold_factors, fold_weight

    print(f"\n### The blocks' convolutions, unpruned (c -> c) and pruned by half (c -> c/2, c/2 -> c), batch {batch}")
    print("| stage | size | c -> c ms | c -> c/2 ms | c -> c/2 folded by 2 ms | c/2 -> c ms | time ratio of the pair "
          "| MAC ratio |\n|---|---|---|---|---|---|---|---|")
    rows = {}
    cl = torch.channels_last
    for stage, (c, hw) in enumerate(((16, 28), (32, 14), (64, 7)), start=1):
        x = torch.randn(batch, c, hw, hw).to(memory_format=cl)
        half = torch.randn(batch, c // 2, hw, hw).to(memory_format=cl)
        w = {k: torch.randn(o, i, 3, 3).to(memory_format=cl) for k, (o, i) in
             (("full", (c, c)), ("down", (c // 2, c)), ("up", (c, c // 2)))}
        w["folded"] = fold_weight(w["down"], None, 2)[0].to(memory_format=cl)
        convs = {"full": lambda x: F.conv2d(x, w["full"], padding=1),
                 "down": lambda x: F.conv2d(x, w["down"], padding=1),
                 "up": lambda _: F.conv2d(half, w["up"], padding=1)}  # the half-width input of a pruned conv2
        if hw % 2 == 0:
            convs["folded"] = lambda x: F.conv2d(x, w["folded"], stride=(1, 2), padding=1)
        ms = {k: 1000 * t for k, t in _interleaved_medians(convs, x, repeats).items()}
        down = ms["folded"] if "folded" in ms and 2 in fold_factors(c // 2) else ms["down"]
        ratio = (down + ms["up"]) / (2 * ms["full"])
        folded = f"{ms['folded']:.2f}" if "folded" in ms else "(odd width)"
        print(f"| {stage} | {c} x {hw} x {hw} | {ms['full']:.2f} | {ms['down']:.2f} | {folded} | {ms['up']:.2f} | "
              f"{ratio:.2f} | 0.50 |")
        rows.update({f"block_conv_stage{stage}_ms_full": ms["full"], f"block_conv_stage{stage}_ms_down": ms["down"],
                     f"block_conv_stage{stage}_ms_up": ms["up"], f"block_conv_stage{stage}_pair_time_ratio": ratio})
        if "folded" in ms:
            rows[f"block_conv_stage{stage}_ms_down_folded"] = ms["folded"]
    return rows


def _busy(stop):
    """Keep one core busy until ``stop`` is set (the 'other processes load the machine' rows)."""
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) % 2**31


def bench_search(repeats: int):
    import contextlib
    import multiprocessing as mp

    from qrepro import search
    from qrepro.objective import PruneObjective
    from qrepro.search import SearchConfig, SizeModel, _bo_candidates
    from qrepro.study import load_study_data, study_settings

    torch.manual_seed(0)
    rows = {}
    for d in (9, 12):
        layers = [f"l{i}" for i in range(d)]
        size = SizeModel(100.0 * d, {n: 64 for n in layers}, {n: 1.0 for n in layers})  # target reachable
        cfg = SearchConfig(layers=layers, target=0.3, budget=61, n_init=10)
        x = torch.rand(60, d, dtype=torch.double)
        y = -((x - 0.3) ** 2).sum(1, keepdim=True) + 0.01 * torch.randn(60, 1, dtype=torch.double)
        _, warm = _bo_candidates(x[:59], y[:59], cfg, size, 59)  # the previous step's hyperparameters
        n = max(1, repeats // 3)
        before = replace(cfg, acquisition="qlognei")
        rows[f"bo_proposal_{d}d_s"] = timed(lambda: _bo_candidates(x, y, cfg, size, 60, warm), n)
        rows[f"bo_proposal_{d}d_cold_s"] = timed(lambda: _bo_candidates(x, y, cfg, size, 60), n)
        rows[f"bo_proposal_{d}d_qlognei_s"] = timed(lambda: _bo_candidates(x, y, before, size, 60, warm), n)
        # two workers: the proposal conditions on 59 evaluations, the 60th pending
        rows[f"bo_proposal_{d}d_pending_s"] = timed(lambda: _bo_candidates(x[:59], y[:59], cfg, size, 60, warm,
                                                                           x[59:]), n)
        if d == 12:  # two other processes keep both cores busy
            stop = mp.get_context("spawn").Event()
            hogs = [mp.get_context("spawn").Process(target=_busy, args=(stop,)) for _ in range(2)]
            for h in hogs:
                h.start()
            try:
                time.sleep(0.5)
                rows["bo_proposal_12d_loaded_1thread_s"] = timed(lambda: _bo_candidates(x, y, cfg, size, 60, warm), n)
                original = search.single_thread
                search.single_thread = contextlib.nullcontext  # the previous behaviour: torch's 2 threads
                try:
                    rows["bo_proposal_12d_loaded_2threads_s"] = timed(
                        lambda: _bo_candidates(x, y, cfg, size, 60, warm), n)
                finally:
                    search.single_thread = original
            finally:
                stop.set()
                for h in hogs:
                    h.join()
    splits = load_study_data(False)
    model = quantize_model(build_model("resnet20", in_channels=1), "bnn")
    ev = study_settings(False)["evaluation"]
    objective = PruneObjective(model, splits, **ev)
    t_eval = timed(lambda: objective(0.5), max(1, repeats // 3))
    rows["evaluation_s"] = t_eval
    print("\n## BoTorch proposal (GP fit + acquisition optimization, 60 observations) against one candidate evaluation")
    print(f"(evaluation: ResNet-20 BNN on Fashion-MNIST, prune + BN re-estimation on {ev['bn_batches']} batches "
          f"+ {ev['val_images']} validation images: {t_eval:.2f} s)")
    print("| proposal | s | ratio to one evaluation |\n|---|---|---|")
    for key, label in (("bo_proposal_9d_s", "9 dimensions, LogEI, warm-started GP (now)"),
                       ("bo_proposal_9d_cold_s", "9 dimensions, LogEI, cold GP fit"),
                       ("bo_proposal_9d_qlognei_s", "9 dimensions, qLogNEI, warm-started GP (before)"),
                       ("bo_proposal_12d_s", "12 dimensions, LogEI, warm-started GP (now)"),
                       ("bo_proposal_12d_cold_s", "12 dimensions, LogEI, cold GP fit"),
                       ("bo_proposal_12d_qlognei_s", "12 dimensions, qLogNEI, warm-started GP (before)"),
                       ("bo_proposal_12d_pending_s", "12 dimensions, LogEI, 59 observations + 1 pending (2 workers)"),
                       ("bo_proposal_12d_loaded_1thread_s", "12 dimensions, 2 other busy processes, 1 thread (now)"),
                       ("bo_proposal_12d_loaded_2threads_s",
                        "12 dimensions, 2 other busy processes, 2 threads (before)")):
        print(f"| {label} | {rows[key]:.2f} | {rows[key] / t_eval:.2f} |")
        rows[key.replace("_s", "_over_evaluation")] = rows[key] / t_eval
    return rows


def bench_cluster(repeats: int):
    """A 40-evaluation BO search of ResNet-20 BNN's ratios on a Dask LocalCluster: 2 workers against 1
    (and one per GPU where CUDA is present); the GP refit + acquisition time against one evaluation."""
    from distributed import Client, LocalCluster

    from qrepro.objective import PruneObjective
    from qrepro.prune import prunable_layers
    from qrepro.search import SearchConfig, SizeModel, _bo_candidates, search_ratios
    from qrepro.study import load_study_data, study_settings

    torch.manual_seed(0)
    splits = load_study_data(False)
    model = quantize_model(build_model("resnet20", in_channels=1), "bnn")
    layers = prunable_layers(model)
    size = SizeModel.from_model(model, layers)
    cfg = SearchConfig(layers=layers, target=0.2612, budget=40, n_init=10, seed=0)
    ev = study_settings(False)["evaluation"]
    rows, runs = {}, [("1 worker", "cpu", 1), ("2 workers", "cpu", 2)]
    if torch.cuda.is_available():
        runs.append((f"{torch.cuda.device_count()} workers, one per GPU", "cuda", torch.cuda.device_count()))
    print("\n## Asynchronous BO on a Dask LocalCluster: a 40-evaluation search (ResNet-20 BNN, "
          f"{len(layers)} layers, target 0.2612)")
    print("| workers | wall s | evaluations / s | speed-up over 1 worker | mean evaluation s |\n|---|---|---|---|---|")
    for label, device, n in runs:
        objective = PruneObjective(model, splits, device=device, **ev)
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=50) as cluster, Client(cluster) as client:
            client.wait_for_workers(n)
            t0 = time.perf_counter()
            res = search_ratios(objective, size, cfg, scheduler=client, progress=False)
            wall = time.perf_counter() - t0
        key = f"search40_{device}_{n}workers"
        rows[key + "_s"] = wall
        rows[key + "_evaluation_s"] = statistics.mean(r["seconds"] for r in res.records)
        base = rows["search40_cpu_1workers_s"]
        print(f"| {label} | {wall:.1f} | {40 / wall:.2f} | {base / wall:.2f} | {rows[key + '_evaluation_s']:.2f} |")
    rows["search40_2workers_speedup"] = rows["search40_cpu_1workers_s"] / rows["search40_cpu_2workers_s"]
    # the driver's share: one GP refit + acquisition at 39 observations, against one evaluation
    x = torch.tensor([r["x"] for r in res.records[:39]], dtype=torch.double)
    y = torch.tensor([[r["value"]] for r in res.records[:39]], dtype=torch.double)
    _, warm = _bo_candidates(x[:-1], y[:-1], cfg, size, 38)
    rows["gp_refit_39obs_s"] = timed(lambda: _bo_candidates(x, y, cfg, size, 39, warm), max(1, repeats // 3))
    objective = PruneObjective(model, splits, **ev)
    rows["evaluation_s"] = timed(lambda: objective(0.3), max(1, repeats // 3))
    ratio = rows["gp_refit_39obs_s"] / rows["evaluation_s"]
    rows["gp_refit_over_evaluation"] = ratio
    print(f"\nGP refit + acquisition at 39 observations: {rows['gp_refit_39obs_s']:.2f} s; one evaluation in this "
          f"process: {rows['evaluation_s']:.2f} s (ratio {ratio:.2f}): BO itself becomes the bottleneck past about "
          f"{1 / ratio:.0f} workers, when a worker frees up faster than the driver proposes.")
    return rows


class KnownOptimum:
    """``90 - 100 sum_l s_l (r_l - 0.1)^2`` under ``sum_l w_l r_l >= T`` (the search's linear size
    constraint) on ``d`` layers: smooth, with its constrained optimum on the constraint, where cheap
    layers are pruned harder; :meth:`optimum` solves the KKT conditions exactly (bisection on the
    multiplier), so a search's regret is known."""

    def __init__(self, d: int = 12, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.layers = [f"l{i}" for i in range(d)]
        self.sens = 0.5 + 3.5 * torch.rand(d, generator=g, dtype=torch.double)
        self.bytes = 1.0 + 3.0 * torch.rand(d, generator=g, dtype=torch.double)

    def size(self):
        from qrepro.search import SizeModel

        return SizeModel(float(100 * self.bytes.sum() * 1.5), {n: 100 for n in self.layers},
                         {n: float(b) for n, b in zip(self.layers, self.bytes)})

    def __call__(self, ratios: dict) -> float:
        r = torch.tensor([ratios[n] for n in self.layers], dtype=torch.double)
        return float(90 - 100 * (self.sens * (r - 0.1) ** 2).sum())

    def optimum(self, target: float, r_max: float) -> float:
        size = self.size()
        w = size.weights()
        need = target * size.base
        lo, hi = 0.0, 1e6
        for _ in range(200):  # r_l(lam) = clip(0.1 + lam w_l / (2 s_l), 0, r_max), increasing in lam
            lam = (lo + hi) / 2
            r = (0.1 + lam * w / (2 * self.sens)).clamp(0, r_max)
            lo, hi = (lam, hi) if float(r @ w) < need else (lo, lam)
        r = (0.1 + hi * w / (2 * self.sens)).clamp(0, r_max)
        return self({n: float(v) for n, v in zip(self.layers, r)})


def bench_regret(repeats: int):
    """Median regret of BO (Monte Carlo qLogNEI, the acquisition before; closed-form LogEI, the default; the GP
    refitted every 5th step or every step, the default; its loss in closed form, the default, or through
    GPyTorch's modules, before), random search and the uniform ratio on
    :class:`KnownOptimum` (12 layers, target 0.4, budget 40), with the search's wall time: the check
    that a faster BO loop still searches as well."""
    from botorch.optim.closures import get_loss_closure_with_grads

    from qrepro import likelihood
    from qrepro.search import SearchConfig, search_ratios

    def gpytorch_loss(mll):  # BoTorch's default closure: the GP's loss through GPyTorch's modules (before)
        return get_loss_closure_with_grads(mll, likelihood.trainable_parameters(mll))

    rows, seeds = {}, range(max(3, repeats // 2))
    print(f"\n## Regret on a known optimum under the linear size constraint (12 layers, target 0.4, budget 40, "
          f"{len(seeds)} seeds)")
    print("| method | median regret | worst | median search s |\n|---|---|---|---|")
    problem = KnownOptimum()
    best = problem.optimum(0.4, 0.9)
    for label, method, extra in (("bo_qlognei_refit5", "bo", {"acquisition": "qlognei", "refit_every": 5}),
                                 ("bo_logei_refit5", "bo", {"acquisition": "logei", "refit_every": 5}),
                                 ("bo_logei_refit1", "bo", {"acquisition": "logei", "refit_every": 1}),
                                 ("bo_logei_refit1_gpytorch_loss", "bo", {"acquisition": "logei", "refit_every": 1}),
                                 ("random", "random", {}), ("uniform", "uniform", {})):
        closed_form = likelihood.mll_closure
        if label.endswith("gpytorch_loss"):
            likelihood.mll_closure = gpytorch_loss
        regrets, walls = [], []
        try:
            for seed in seeds:
                cfg = SearchConfig(layers=problem.layers, method=method, target=0.4, r_max=0.9, budget=40,
                                   n_init=10, seed=seed, **extra)
                t0 = time.perf_counter()
                regrets.append(best - search_ratios(problem, problem.size(), cfg, progress=False).best["value"])
                walls.append(time.perf_counter() - t0)
                if method == "uniform":
                    break
        finally:
            likelihood.mll_closure = closed_form
        rows[f"regret_{label}_median"] = statistics.median(regrets)
        rows[f"search_{label}_seconds_median"] = statistics.median(walls)
        print(f"| {label} | {statistics.median(regrets):.4f} | {max(regrets):.4f} | {statistics.median(walls):.1f} |")
    return rows

KEYS = {"full precision": "fp", "BNN": "bnn", "DoReFa 2-bit": "dorefa"}


def bench_gpu(repeats: int):
    """The GPU rows, measured by ``gpu_check.section_throughput`` (one implementation for both scripts)."""
    print("\n## GPU training throughput against full precision (benchmarks/gpu_check.py's throughput section)")
    if not torch.cuda.is_available():
        print("no CUDA device here: GPU rows skipped (run make benchmark or make gpu-check on a GPU machine)")
        return {}
    from gpu_check import section_throughput

    res = section_throughput(torch.device("cuda"))
    rows = {"gpu_search_evaluation_s": res["search_evaluation_seconds"]}
    for name, r in res.items():
        if isinstance(r, dict):  # one setting: <arch>_b<batch>[_bf16_cl]
            rows[f"gpu_train_ratio_bnn_over_fp_{name}"] = r["bnn_over_fp"]
            rows[f"gpu_train_ratio_dorefa_over_fp_{name}"] = r["dorefa_over_fp"]
            rows[f"gpu_train_images_per_s_fp_{name}"] = r["images_per_s"]["fp"]
    return rows


SECTIONS = {"train": bench_train, "criteria": bench_criteria, "inference": bench_inference, "search": bench_search,
            "cluster": bench_cluster, "regret": bench_regret, "compile": bench_compile, "gpu": bench_gpu}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="also write every row to this JSON file")
    args = parser.parse_args(argv)
    info = environment_info()
    print(f"# qrepro benchmark  ({platform.processor() or platform.machine()}, {info['device']}, "
          f"torch {info['torch']}, botorch {info['botorch']})")
    rows = {}
    for s in args.sections:
        rows.update(SECTIONS[s](args.repeats))
    if args.json:
        import json
        from pathlib import Path

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"environment": info, "repeats": args.repeats, "rows": rows}, indent=2))
        print(f"\nrows written to {args.json}")


if __name__ == "__main__":
    main()
