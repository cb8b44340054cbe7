"""Benchmark section inference: pruned against unpruned ResNet-20 on the CPU, as modules and fused, with the
convolutions that bound it and the column-folded form."""
from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F
from timing import count_macs, interleaved_medians, interleaved_times, ratio_quartiles

from qrepro.inference import fold_factors, fold_weight, fuse_for_inference
from qrepro.models import build_model
from qrepro.prune import prune
from qrepro.quantize import quantize_model


def bench_inference(repeats: int):
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
        q1, q3 = ratio_quartiles(pruned, unpruned)
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
        t = interleaved_times(nets, x, repeats)
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
            one = interleaved_times({k: nets[k] for k in ("fused", "fused_pruned")}, x, repeats)
        finally:
            torch.set_num_threads(threads)
        row(scheme, "fused, 1 thread", one["fused"], one["fused_pruned"],
            f"fused_pruned_half_time_ratio_{scheme}_1thread", macs)
        # torch.compile (inductor) of the fused forms: elementwise work fused around the convolutions
        comp = interleaved_times({k: torch.compile(nets[k]) for k in ("fused", "fused_pruned")}, x, repeats)
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
            ms = {f: 1000 * t for f, t in interleaved_medians(convs, x, repeats).items()}
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
        ms = {k: 1000 * t for k, t in interleaved_medians(convs, x, repeats).items()}
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
