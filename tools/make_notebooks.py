"""Writes notebooks/NN_*.ipynb (sources, no outputs).  The notebooks are the source of truth
once written; this script exists so that their shared opening stays identical.  Run:
    .venv/bin/python tools/make_notebooks.py
"""
from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parent.parent
PAPER = ("L. Guerra, B. Zhuang, I. Reid, T. Drummond, *Automatic Pruning for Quantized Neural Networks*, "
         "arXiv:2002.00523 (2020)")
SILENT = ("**The paper's full text is not reproduced here.** This package implements what its abstract states; "
          "where the paper is silent, this package chooses, and every choice is a parameter "
          "(see the README's *Choices where the paper is silent*).")
PARAMS = "smoke = False  # True: read the tiny smoke study (CI)\nresults = None  # results folder; None: results/"
SETUP = """import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from qrepro import report, study

sns.set_theme(style="whitegrid", context="notebook")
torch.set_num_threads(2)"""


def notebook(name, title, intro, cells):
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbf.v4.new_markdown_cell(f"# {title}\n\nPaper: {PAPER}.\n\n{SILENT}\n\n{intro}"))
    p = nbf.v4.new_code_cell(PARAMS)
    p.metadata["tags"] = ["parameters"]
    nb.cells.append(p)
    nb.cells.append(nbf.v4.new_code_cell(SETUP))
    for kind, text in cells:
        nb.cells.append(nbf.v4.new_markdown_cell(text) if kind == "md" else nbf.v4.new_code_cell(text))
    nbf.write(nb, ROOT / "notebooks" / f"{name}.ipynb")


notebook("01_quantizers", "1. Quantizers, and why filter norms stop working after binarization",
         "For teaching. The forward functions and straight-through gradients of BNN (XNOR-style) binarization and "
         "DoReFa-Net k-bit quantization; the latent and quantized weights of a trained layer; why every binary "
         "filter of a layer has the same norm, so norm-based pruning criteria lose their meaning; and how many "
         "filters of the trained networks repeat each other, the redundancy this package's criterion removes.", [
    ("md", "## Forward and straight-through backward\n\n`sign` passes the gradient where `|x| <= 1` "
           "(Courbariaux et al. 2016); DoReFa's `round` passes it unchanged, its clip to `[0, 1]` does not "
           "outside that interval."),
    ("code", """from qrepro.quantize import binarize_activation, dorefa_activation, dorefa_weight

x = torch.linspace(-1.5, 2.0, 701, requires_grad=True)
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
y = binarize_activation(x)
y.sum().backward()
axes[0].plot(x.detach(), y.detach(), label="sign(x)")
axes[0].plot(x.detach(), x.grad, "--", label="straight-through gradient")
axes[0].set_title("BNN activation")
for k in (1, 2, 3):
    x.grad = None
    y = dorefa_activation(x, k)
    y.sum().backward()
    axes[1].plot(x.detach(), y.detach(), label=f"{k}-bit")
axes[1].plot(x.detach(), x.grad, "k--", lw=1, label="gradient")
axes[1].set_title("DoReFa activation quantize_k(clip(x, 0, 1))")
w = torch.linspace(-2.5, 2.5, 701)
for k in (1, 2, 3):
    axes[2].plot(w, dorefa_weight(w, k), label=f"{k}-bit")
axes[2].set_title("DoReFa weights on a layer spanning [-2.5, 2.5]")
for ax in axes:
    ax.legend(fontsize=8)
    ax.set_xlabel("input")
report.save_figure(fig, "quantizers_ste", results)"""),
    ("md", "## Latent against quantized weights of a trained layer"),
    ("code", """bases = {k: study.load_base(k, smoke, results)[0] for k in study.QUANT_KINDS}
layer = "layer2.1.conv1"
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
for ax, (kind, model) in zip(axes, bases.items()):
    conv = model.get_submodule(layer)
    ax.hist(conv.weight.detach().flatten(), bins=80, alpha=0.6, density=True, label="latent")
    ax.hist(conv.quantized_weight().detach().flatten(), bins=80, alpha=0.6, density=True, label="quantized")
    ax.set_title(f"{report.LABELS[kind]}: {layer}")
    ax.legend()
report.save_figure(fig, "weight_histograms", results)"""),
    ("md", "## Filter norms after binarization\n\nEvery `{-1, +1}` filter of length `D` has L1 norm `D`: "
           "the latent weights' norms differ, the deployed filters' do not. What still tells binary filters "
           "apart is how they differ from each other."),
    ("code", """conv = bases["bnn"].get_submodule(layer)
latent_l1 = conv.weight.detach().abs().flatten(1).sum(1)
code_l1 = conv.weight_codes().abs().sum(1)
fig, ax = plt.subplots(figsize=(7, 3.4))
ax.plot(latent_l1 / latent_l1.max(), "o", ms=3, label="latent weights (normalized)")
ax.plot(code_l1 / code_l1.max(), "s", ms=3, label="binary codes (normalized)")
ax.set_xlabel("filter")
ax.set_ylabel("L1 norm")
ax.set_title(f"BNN {layer}: filter norms")
ax.legend()
report.save_figure(fig, "filter_norms", results)
print("distinct L1 norms of the binary codes:", code_l1.unique().tolist())"""),
    ("md", "## Exact and near duplicate filters\n\nNearest-neighbour distance as a fraction of the filter "
           "length (Hamming for binary codes; L2 between levels for DoReFa). Random codes sit near 0.5."),
    ("code", """dups = pd.concat([report.duplicate_table(m).assign(model=report.LABELS[k]) for k, m in bases.items()])
report.save_table(dups, "filter_duplicates", results, floatfmt=".3f")
dups"""),
])

notebook("02_baselines", "2. Quantized baselines",
         "Full-precision, BNN and 2-bit DoReFa ResNet-20 on Fashion-MNIST (the offline default; the paper "
         "uses CIFAR-10 and ImageNet): test accuracy, parameters, size and training curves; and the ResNet-18 "
         "size accounting beside the paper's 2.47 MB and 4.36 MB.", [
    ("code", """splits = study.load_study_data(smoke)
bases = report.base_models(smoke, results)
table = report.baselines_table(bases, splits)
report.save_table(table, "baselines", results, note="Test top-1 (%) on the 10,000 Fashion-MNIST test images.")
table"""),
    ("code", """curves = report.training_curves(bases)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
sns.lineplot(curves, x="epoch", y="train_loss", hue="model", marker="o", ax=axes[0])
sns.lineplot(curves, x="epoch", y="val_acc", hue="model", marker="o", ax=axes[1])
axes[1].set_ylabel("validation top-1 (%)")
report.save_figure(fig, "training_curves", results)"""),
    ("md", "## ResNet-18 size accounting\n\nUnder each convention, the unpruned size, that size minus "
           "26.12 %, and the paper's pruned sizes. The paper's 2.47 MB (BNN) matches 26.12 % removed from the "
           "1-bit ResNet-18; its 4.36 MB (DoReFa 2-bit) sits 6-7 % below the unpruned 2-bit model."),
    ("code", """r18 = report.resnet18_size_table()
report.save_table(r18, "resnet18_size", results, note=report.DEFAULT_CONVENTION.describe())
r18"""),
])

notebook("03_criteria_ablation", "3. Criteria ablation",
         "Every criterion at uniform pruning ratios (the first convolution of every basic block), on the trained "
         "BNN and 2-bit DoReFa ResNet-20, after BatchNorm re-estimation (no gradient step) and after a short "
         "fine-tune. Validation top-1 on the held-out split (the test set is kept for the final table); the random "
         "criterion is the mean and standard deviation over seeds. `redundancy` is this package's reading of the "
         "paper's criterion (closest pair of quantized filters, `|gamma|` tie-break); `redundancy-gm` uses the "
         "geometric-median tie-break.", [
    ("code", """df = report.ablation_frame(smoke, results)
summary = report.ablation_summary(df)
report.save_table(summary, "ablation_summary", results)
summary[summary.stage == "bn"].pivot_table(index=["model", "ratio"], columns="criterion", values="val_top1_mean")"""),
    ("code", """bn = df[df.stage == "bn"]
fig, axes = plt.subplots(1, 2, figsize=(13, 4), sharey=True)
for ax, kind in zip(axes, study.QUANT_KINDS):
    sns.lineplot(bn[bn.model == kind], x="ratio", y="val_acc", hue="criterion", style="criterion", markers=True,
                 errorbar="sd", ax=ax)
    ax.set_title(f"{report.LABELS[kind]}: after BN re-estimation")
    ax.set_ylabel("validation top-1 (%)")
report.save_figure(fig, "ablation_bn", results)"""),
    ("code", """ft = df[df.stage == "finetune"]
fig, ax = plt.subplots(figsize=(9, 3.6))
sns.barplot(ft, x="criterion", y="val_acc", hue="model", errorbar="sd", ax=ax)
ax.set_ylabel("validation top-1 (%)")
ax.set_title(f"after a short fine-tune at ratio {ft.ratio.iloc[0]}")
report.save_figure(fig, "ablation_finetune", results)"""),
])

notebook("04_bayesian_search", "4. Bayesian search of per-layer ratios",
         "BoTorch (Sobol initial design, `SingleTaskGP`, qLogNEI) under the analytic size constraint, against "
         "random search in the feasible region and the single uniform ratio that meets the same target, with "
         "the same evaluation budget. Each evaluation prunes with the `redundancy` criterion, re-estimates "
         "BatchNorm and measures validation top-1.", [
    ("code", """sf = report.search_frame(smoke, results)
budget = study.study_settings(smoke)["search"]["budget"]
conv = report.convergence(sf, budget)
g = sns.relplot(conv, x="evaluations", y="best_val_top1", hue="method", col="model", row="target", kind="line",
                errorbar="sd", height=3.2, aspect=1.5, facet_kws={"sharey": False})
g.set_axis_labels("evaluations", "best feasible validation top-1 (%)")
report.save_figure(g.figure, "search_convergence", results)"""),
    ("code", """summary = report.search_summary(sf)
report.save_table(summary, "search_summary", results)
summary"""),
    ("md", "## The ratios BO chose, beside the uniform ratio\n\nBO: the best feasible configuration over its "
           "seeds' searches, the one the final table fine-tunes."),
    ("code", """c = sf[(sf["mode"] == "constrained") & sf.feasible]
rows = []
for (model, target, method), grp in c[c.method.isin(["bo", "uniform"])].groupby(["model", "target", "method"]):
    best = grp.loc[grp.value.idxmax()]
    rows += [{"model": model, "target": target, "method": method, "layer": k, "ratio": v} for k, v in best.ratios.items()]
chosen = pd.DataFrame(rows)
g = sns.catplot(chosen, x="layer", y="ratio", hue="method", col="model", row="target", kind="bar", height=3,
                aspect=2.2)
g.set_xticklabels(rotation=60)
report.save_figure(g.figure, "search_ratios", results)"""),
    ("md", "## The GP posterior over two layers' ratios\n\nThe surrogate fitted to one BO search "
           "(BNN, the paper's target, seed 0), as a function of two layers' ratios with the others held at "
           "the best point found; dots are the evaluated candidates projected on the plane."),
    ("code", """import numpy as np

job = sf[(sf.model == "bnn") & (sf["mode"] == "constrained") & (sf.method == "bo") & (sf.seed == 0)]
job = job[job.target == job.target.min()]
layers = list(job.ratios.iloc[0])
pair = (0, len(layers) - 1)
grid, mean, std, seen, best = report.gp_slice(job, layers, pair, study.study_settings(smoke)["search"]["r_max"])
fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
for ax, z, title in ((axes[0], mean, "posterior mean (val top-1 %)"), (axes[1], std, "posterior std")):
    cs = ax.contourf(grid, grid, z.T, levels=20, cmap="viridis")
    fig.colorbar(cs, ax=ax)
    ax.scatter(seen[:, 0], seen[:, 1], c="w", s=12, edgecolors="k")
    ax.plot(*best, "r*", ms=14)
    ax.set_xlabel(f"ratio of {layers[pair[0]]}")
    ax.set_ylabel(f"ratio of {layers[pair[1]]}")
    ax.set_title(title)
report.save_figure(fig, "gp_posterior", results)"""),
])

notebook("05_pareto_front", "5. The accuracy / size Pareto front",
         "The multi-objective search (qLogNEHVI, the size a known deterministic objective) returns the "
         "non-dominated set of validation accuracy against model size; beside it, the same criterion at one "
         "uniform ratio for every layer (from the ablation, after BatchNorm re-estimation).", [
    ("code", """sf = report.search_frame(smoke, results)
par = sf[sf["mode"] == "pareto"].copy()
kind = par.model.iloc[0]
par["size_MB"] = par.size_bytes / report.MB
from qrepro.search import pareto_front
mask = pareto_front(torch.tensor(par[["value", "pruned_fraction"]].to_numpy(), dtype=torch.double)).numpy()
front = par[mask].sort_values("size_MB")
ab = report.ablation_frame(smoke, results)
uni = ab[(ab.model == kind) & (ab.criterion == "redundancy") & (ab.stage == "bn")].copy()
uni["size_MB"] = uni.size_bytes / report.MB
fig, ax = plt.subplots(figsize=(8, 4.4))
ax.scatter(par.size_MB, par.value, s=14, alpha=0.5, label="evaluated candidates")
ax.plot(front.size_MB, front.value, "o-", color="C3", label="Pareto front (BO)")
ax.plot(uni.size_MB, uni.val_acc, "s--", color="C2", label="uniform ratio")
ax.set_xlabel(f"model size (MB, {report.DEFAULT_CONVENTION.describe().split(';')[0]})", fontsize=8)
ax.set_ylabel("validation top-1 (%)")
ax.set_title(f"{report.LABELS[kind]} ResNet-20")
ax.legend()
report.save_figure(fig, "pareto_front", results)
report.save_table(front[["index", "value", "size_MB", "pruned_fraction"]], "pareto_front", results, floatfmt=".4f")"""),
    ("code", """fig, ax = plt.subplots(figsize=(6, 3.4))
ax.plot(par["index"] + 1, par.hypervolume, "o-", ms=3)
ax.set_xlabel("evaluations")
ax.set_ylabel("hypervolume (top-1 x pruned fraction)")
report.save_figure(fig, "pareto_hypervolume", results)"""),
])

notebook("06_paper_table", "6. The paper-style table",
         "BNN and 2-bit DoReFa ResNet-20, unpruned and pruned at each size target (26.12 % of the model size, "
         "the paper's figure, by default) with the BO ratios and the uniform ratio, each fine-tuned the same way: "
         "top-1 on the test set (mean and std over fine-tuning seeds), size in MB computed from the loaded "
         "models, pruned percentage, and the size on disk of the packed file. The paper's ImageNet figures are "
         "beside ours: **a different dataset, architecture and scale**, not a like-for-like comparison.", [
    ("code", """splits = study.load_study_data(smoke)
table = report.final_table(smoke, splits, results)
report.save_table(table, "paper_table", results,
                  note="Fashion-MNIST test top-1 (%), ResNet-20. " + report.DEFAULT_CONVENTION.describe())
table"""),
    ("code", """report.save_table(report.PAPER, "paper_reference", results,
                  note="arXiv:2002.00523 (abstract): ResNet-18 on ImageNet. Not comparable with the table above.")
report.PAPER"""),
])
