"""Timing helpers shared by the benchmark sections and the GPU check: medians, interleaved rounds, ratios."""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn as nn

# row keys of the three base models


KEYS = {"full precision": "fp", "BNN": "bnn", "DoReFa 2-bit": "dorefa"}


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


def interleaved_times(nets: dict, x: torch.Tensor, repeats: int) -> dict:
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


def interleaved_medians(nets: dict, x: torch.Tensor, repeats: int) -> dict:
    """Median forward time of each net on ``x``, interleaved (:func:`interleaved_times`)."""
    return {k: statistics.median(v) for k, v in interleaved_times(nets, x, repeats).items()}


def ratio_quartiles(numerators: list, denominators: list) -> list:
    """Quartiles ``[q1, q3]`` of the round-by-round ratios ``numerators[i] / denominators[i]``: how far one
    run's ratio of medians can be trusted."""
    ratios = [a / b for a, b in zip(numerators, denominators)]
    if len(ratios) < 2:
        return ratios * 2
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return [q1, q3]


def busy(stop):
    """Keep one core busy until ``stop`` is set (the 'other processes load the machine' rows)."""
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) % 2**31
