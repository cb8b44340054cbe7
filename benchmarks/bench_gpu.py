"""Benchmark section gpu: the GPU training rows, measured by gpu_check.section_throughput."""
from __future__ import annotations

import torch
from gpu_check import section_throughput


def bench_gpu(repeats: int):
    """The GPU rows, measured by ``gpu_check.section_throughput`` (one implementation for both scripts)."""
    print("\n## GPU training throughput against full precision (benchmarks/gpu_check.py's throughput section)")
    if not torch.cuda.is_available():
        print("no CUDA device here: GPU rows skipped (run make benchmark or make gpu-check on a GPU machine)")
        return {}
    res = section_throughput(torch.device("cuda"))
    rows = {f"gpu_search_evaluation_s_{arch}": s for arch, s in res["search_evaluation_seconds"].items()}
    for name, r in res.items():
        if isinstance(r, dict) and "bnn_over_fp" in r:  # one setting: <arch>_b<batch>_<size>px[_bf16_cl]
            rows[f"gpu_train_ratio_bnn_over_fp_{name}"] = r["bnn_over_fp"]
            rows[f"gpu_train_ratio_dorefa_over_fp_{name}"] = r["dorefa_over_fp"]
            rows[f"gpu_train_images_per_s_fp_{name}"] = r["images_per_s"]["fp"]
    return rows
