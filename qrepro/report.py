"""What the notebooks need to turn cached artifacts into figures and tables.

Everything here only *reads* the cache written by :mod:`qrepro.study` (and evaluates the
cached models on the test set); nothing trains.  Tables are written as CSV and Markdown,
figures as PNG and PDF, under ``results/tables`` and ``results/figures``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import study
from .cache import require
from .paths import figures_dir, tables_dir
from .size import MB, DEFAULT_CONVENTION, model_size_bytes

PAPER = pd.DataFrame([  # arXiv:2002.00523, abstract: ResNet-18 on ImageNet
    {"quantization": "BNN (1-bit W/A)", "top1": 47.32, "size_MB": 2.47, "pruned_percent": 26.12},
    {"quantization": "DoReFa 2-bit", "top1": 59.30, "size_MB": 4.36, "pruned_percent": float("nan")},
])
LABELS = {"fp": "full precision", "bnn": "BNN (1-bit)", "dorefa": "DoReFa 2-bit"}


# --------------------------------------------------------------------------- output
def markdown_table(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """A GitHub Markdown table (no extra dependency)."""
    def fmt(v, col):
        if isinstance(v, (float, np.floating)):
            # sizes of small models in MB need more digits than accuracies
            return "" if np.isnan(v) else format(v, ".4f" if col.endswith("MB") else floatfmt)
        return str(v)

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v, c) for v, c in zip(row, cols)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def save_table(df: pd.DataFrame, name: str, root=None, floatfmt: str = ".2f", note: str | None = None) -> list[Path]:
    folder = tables_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    csv, md = folder / f"{name}.csv", folder / f"{name}.md"
    df.to_csv(csv, index=False)
    md.write_text((f"{note}\n\n" if note else "") + markdown_table(df, floatfmt))
    return [csv, md]


def save_figure(fig, name: str, root=None) -> list[Path]:
    folder = figures_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None})  # byte-stable reruns
    return paths


# --------------------------------------------------------------------------- models
def test_accuracy(model, splits) -> float:
    from .train import evaluate

    return evaluate(model, splits.test)["acc"]


def base_models(smoke: bool, root=None) -> dict:
    """``{kind: (model, payload)}`` of the three cached base models."""
    return {k: study.load_base(k, smoke, root) for k in study.BASE_KINDS}


def baselines_table(bases: dict, splits) -> pd.DataFrame:
    from .models import count_parameters

    rows = []
    for kind, (model, payload) in bases.items():
        rows.append({"model": LABELS[kind], "test_top1": test_accuracy(model, splits),
                     "val_top1": payload["metrics"].get("val_acc"), "params": count_parameters(model),
                     "size_MB": model_size_bytes(model) / MB, "epochs": payload["config"]["epochs"],
                     "train_minutes": payload["metrics"].get("train_seconds", float("nan")) / 60})
    return pd.DataFrame(rows)


def training_curves(bases: dict) -> pd.DataFrame:
    rows = []
    for kind, (_, payload) in bases.items():
        for h in payload["metrics"].get("history", []):
            rows.append({"model": LABELS[kind], **{k: v for k, v in h.items() if not isinstance(v, dict)}})
    return pd.DataFrame(rows)


def resnet18_size_table() -> pd.DataFrame:
    """ResNet-18 sizes under this package's convention beside the paper's figures."""
    from .models import build_model
    from .quantize import quantize_model
    from .size import SizeConvention

    rows = []
    for scheme, bits, paper in (("bnn", None, 2.47), ("dorefa", 2, 4.36)):
        q = quantize_model(build_model("resnet18"), scheme, w_bits=bits, a_bits=bits)
        for label, conv in (("scales counted, BN counted", DEFAULT_CONVENTION),
                            ("scales folded, BN counted", SizeConvention(scale_bits=0)),
                            ("scales folded, no BN", SizeConvention(scale_bits=0, include_bn=False))):
            mb = model_size_bytes(q, conv) / MB
            rows.append({"quantization": LABELS[scheme], "convention": label, "unpruned_MB": mb,
                         "minus_26.12%_MB": mb * (1 - 0.2612), "paper_pruned_MB": paper,
                         "paper_vs_unpruned_percent": 100 * (1 - paper / mb)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- filters
def duplicate_table(model, near: float = 0.25) -> pd.DataFrame:
    """Per quantized block layer: exact duplicate filters (identical codes), near duplicates
    (nearest neighbour differs in at most ``near`` of its weights' codes), and the mean
    nearest-neighbour fraction of differing codes; uniformly random codes would differ in
    ``1 - 2^-k`` of them (0.5 for binary)."""
    from .prune import layer_view, prune_groups

    rows = []
    for name, g in prune_groups(model, "block").items():
        v = layer_view(model, g)
        c = v.codes
        differ = (c[:, None, :] != c[None, :, :]).double().mean(-1)  # (N, N) fraction of differing codes
        differ.fill_diagonal_(float("inf"))
        nn_frac = differ.min(1).values
        bits = 1 if v.kind == "binary" else int(torch.log2(c.max() + 1).ceil().item())
        rows.append({"layer": name, "filters": v.n, "length": c.shape[1],
                     "exact_duplicates": int((nn_frac == 0).sum()),
                     f"near_duplicates(<={near})": int((nn_frac <= near).sum()),
                     "mean_nn_differing": float(nn_frac.mean()), "random_codes_differing": 1 - 2.0**-bits})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- ablation
def ablation_frame(smoke: bool, root=None) -> pd.DataFrame:
    path = require(study.ablation_path(smoke, root), study._command("ablation", smoke))
    return pd.read_csv(path)


def ablation_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread (std over seeds; 0 for deterministic criteria) per model, criterion, ratio, stage."""
    g = df.groupby(["model", "stage", "ratio", "criterion"])["val_acc"]
    out = g.agg(["mean", "std", "count"]).reset_index().fillna({"std": 0.0})
    return out.rename(columns={"mean": "val_top1_mean", "std": "val_top1_std", "count": "runs"})


# --------------------------------------------------------------------------- searches
def search_frame(smoke: bool, root=None) -> pd.DataFrame:
    """Every evaluation of every search job, long format (one row per evaluation)."""
    from .search import load_journal

    rows = []
    for job in study.search_jobs(smoke):
        path = study.search_journal_path(job, smoke, root)
        require(path.with_suffix(".done"), study._command("search", smoke))
        header, evals = load_journal(path)
        layers = header["config"]["layers"]
        for r in evals:
            rows.append({**job, "index": r["index"], "value": r["value"], "size_bytes": r["size"],
                         "pruned_fraction": r["pruned_fraction"], "feasible": r["feasible"],
                         "best_so_far": r["best_so_far"], "hypervolume": r.get("hypervolume"),
                         "source": r["source"], "seconds": r["seconds"],
                         "ratios": dict(zip(layers, r["ratios"]))})
    return pd.DataFrame(rows)


def convergence(df: pd.DataFrame, budget: int) -> pd.DataFrame:
    """Best feasible value after n evaluations, per model, target, method and seed; the
    uniform baseline (one evaluation) is carried flat over the budget."""
    rows = []
    for (model, target, method, seed), g in df[df["mode"] == "constrained"].groupby(
            ["model", "target", "method", "seed"]):
        best = g.sort_values("index")["best_so_far"].ffill().tolist()
        best += [best[-1]] * (budget - len(best))
        rows += [{"model": model, "target": target, "method": method, "seed": seed, "evaluations": n + 1,
                  "best_val_top1": b} for n, b in enumerate(best[:budget])]
    return pd.DataFrame(rows)


def search_summary(df: pd.DataFrame) -> pd.DataFrame:
    c = df[df["mode"] == "constrained"]
    best = c[c["feasible"]].sort_values("value").groupby(["model", "target", "method", "seed"]).tail(1)
    out = best.groupby(["model", "target", "method"]).agg(
        best_val_top1_mean=("value", "mean"), best_val_top1_std=("value", "std"), seeds=("seed", "count"),
        pruned_percent_mean=("pruned_fraction", lambda s: 100 * s.mean())).reset_index()
    keys = ["model", "target", "method"]
    counts = c.groupby(keys + ["seed"]).size().groupby(keys).mean().rename("evaluations_per_seed").reset_index()
    return out.merge(counts, on=keys).fillna({"best_val_top1_std": 0.0})


# --------------------------------------------------------------------------- finals
def final_table(smoke: bool, splits, root=None, bases: dict | None = None) -> pd.DataFrame:
    """The paper-style table: unpruned and pruned (BO and uniform, each target), test top-1
    (mean and std over fine-tuning seeds), size in MB from the loaded models, pruned percent
    and the packed file's size on disk."""
    import tempfile

    from .export import load_packed, save_packed

    bases = bases or {k: study.load_base(k, smoke, root) for k in study.QUANT_KINDS}
    rows = []
    for kind in study.QUANT_KINDS:
        model = bases[kind][0]
        base_size = model_size_bytes(model)
        with tempfile.TemporaryDirectory() as tmp:
            packed = save_packed(Path(tmp) / "base.qrpk", model)
            disk = packed.stat().st_size
        rows.append({"model": LABELS[kind], "configuration": "unpruned", "target_percent": 0.0, "seeds": 1,
                     "test_top1_mean": test_accuracy(model, splits), "test_top1_std": 0.0,
                     "size_MB": base_size / MB, "pruned_percent": 0.0, "file_MB": disk / MB})
        for target in study.study_settings(smoke)["final"]["targets"][kind]:
            for method in ("uniform", "bo"):
                accs, sizes, disks = [], [], []
                for job in study.final_jobs(smoke):
                    if (job["model"], job["method"], job["target"]) != (kind, method, target):
                        continue
                    path = require(study.final_path(job, smoke, root), study._command("final", smoke))
                    pruned, _ = load_packed(path)
                    accs.append(test_accuracy(pruned, splits))
                    sizes.append(model_size_bytes(pruned))
                    disks.append(path.stat().st_size)
                rows.append({"model": LABELS[kind], "configuration": f"{method} @ {100 * target:.2f}%",
                             "target_percent": 100 * target, "seeds": len(accs),
                             "test_top1_mean": float(np.mean(accs)),
                             "test_top1_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                             "size_MB": float(np.mean(sizes)) / MB,
                             "pruned_percent": 100 * (1 - float(np.mean(sizes)) / base_size),
                             "file_MB": float(np.mean(disks)) / MB})
    return pd.DataFrame(rows)


def gp_slice(df_job: pd.DataFrame, layers: list[str], pair: tuple[int, int], r_max: float, grid: int = 40):
    """Posterior mean and std of a GP fitted to one search's evaluations, over two layers'
    ratios with the others held at the best point (for teaching)."""
    from .search import fit_gp

    x = torch.tensor([[r[n] / r_max for n in layers] for r in df_job["ratios"]], dtype=torch.double)
    y = torch.tensor(df_job["value"].tolist(), dtype=torch.double).unsqueeze(-1)
    gp = fit_gp(x, y)
    best = x[int(y.argmax())]
    u = torch.linspace(0, 1, grid, dtype=torch.double)
    a, b = torch.meshgrid(u, u, indexing="ij")
    pts = best.repeat(grid * grid, 1)
    pts[:, pair[0]], pts[:, pair[1]] = a.flatten(), b.flatten()
    with torch.no_grad():
        post = gp.posterior(pts)
    mean = post.mean.view(grid, grid).numpy()
    std = post.variance.clamp_min(0).sqrt().view(grid, grid).numpy()
    return (u * r_max).numpy(), mean, std, x[:, list(pair)].numpy() * r_max, best[list(pair)].numpy() * r_max
