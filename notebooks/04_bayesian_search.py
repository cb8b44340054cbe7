# %% [markdown]
# # 4. Bayesian search of per-layer ratios
#
# Paper: L. Guerra, B. Zhuang, I. Reid, T. Drummond, *Automatic Pruning for Quantized Neural Networks*, arXiv:2002.00523 (2020).
#
# **The paper's full text is not reproduced here.** This package implements what its abstract states; where the paper is silent, this package chooses, and every choice is a parameter (see the README's *Choices where the paper is silent*).
#
# BoTorch (Sobol initial design, `SingleTaskGP`, log expected improvement) under the analytic size constraint, against random search in the feasible region and the single uniform ratio that meets the same target, with the same evaluation budget. Each evaluation prunes with the `redundancy` criterion, re-estimates BatchNorm and measures validation top-1.

# %% tags=["parameters"]
smoke = False  # True: read the tiny smoke study (CI)
results = None  # results folder; None: results/

# %%
from qrepro.notebooks import check_parameters

smoke, results = check_parameters(smoke=smoke, results=results)  # papermill's values, validated

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import display

from qrepro import report

sns.set_theme(style="whitegrid", context="notebook")

# %%
settings = report.study_settings(smoke)["search"]
everything = report.search_frame(smoke, results)
sf = everything[everything.criterion == settings["criterion"]]  # BO with other criteria: the last section
budget = settings["budget"]
conv = report.convergence(sf, budget)
g = sns.relplot(conv, x="evaluations", y="best_val_top1", hue="method", col="model", row="target", kind="line",
                errorbar="sd", height=3.2, aspect=1.5, facet_kws={"sharey": False})
g.set_axis_labels("evaluations", "best feasible\nvalidation top-1 (%)")
g.figure.tight_layout()
report.save_figure(g.figure, "search_convergence", results)

# %%
report.read_table("search_summary", smoke, results)

# %% [markdown]
# ## The ratios BO chose, beside the uniform ratio
#
# BO: the best feasible configuration over its seeds' searches, the one the final table fine-tunes.

# %%
c = sf[(sf["mode"] == "constrained") & sf.feasible]
rows = []
for (model, target, method), grp in c[c.method.isin(["bo", "uniform"])].groupby(["model", "target", "method"]):
    best = grp.loc[grp.value.idxmax()]
    rows += [{"model": model, "target": target, "method": method, "layer": k, "ratio": v} for k, v in best.ratios.items()]
chosen = pd.DataFrame(rows)
g = sns.catplot(chosen, x="layer", y="ratio", hue="method", col="model", row="target", kind="bar", height=3,
                aspect=2.2, sharex=False)
for ax in g.axes.flat:  # every panel names its layers
    ax.tick_params(axis="x", labelbottom=True, labelrotation=60)
g.figure.tight_layout()
sns.move_legend(g, "upper left", bbox_to_anchor=(1.0, 0.98))  # right of the panels, clear of their labels
report.save_figure(g.figure, "search_ratios", results)

# %% [markdown]
# ## The GP posterior over two layers' ratios
#
# The surrogate fitted to one BO search (BNN, the paper's target, seed 0), as a function of two layers' ratios with the others held at the best point found; dots are the evaluated candidates projected on the plane.

# %%
gp = report.gp_slice(smoke, results)  # made by the study (stage evaluate): no GP is fitted here
grid, mean, std, seen, best, layers = gp["grid"], gp["mean"], gp["std"], gp["seen"], gp["best"], gp["layers"]
fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
for ax, z, title in ((axes[0], mean, "posterior mean (val top-1 %)"), (axes[1], std, "posterior std")):
    cs = ax.contourf(grid, grid, z.T, levels=20, cmap="viridis")
    fig.colorbar(cs, ax=ax)
    ax.scatter(seen[:, 0], seen[:, 1], c="w", s=12, edgecolors="k")
    ax.plot(*best, "r*", ms=14)
    ax.set_xlabel(f"ratio of {layers[0]}")
    ax.set_ylabel(f"ratio of {layers[1]}")
    ax.set_title(title)
report.save_figure(fig, "gp_posterior", results)

# %% [markdown]
# ## The criterion under search
#
# Which criterion should the automatic search prune with? The ablation (notebook 3) compares criteria at one uniform ratio; here BO searches the per-layer ratios with each of the two that did best there (`compare_criteria` in the preset), at the paper's target, over the same seeds and budget. The table gives the best validation top-1 each search found (before fine-tuning) and the test top-1 of the fine-tuned models (notebook 6's fine-tune).

# %%
if settings["compare_criteria"]:
    at = everything[(everything.method == "bo") & (everything["mode"] == "constrained")
                    & (everything.target == settings["compare_target"])]
    conv_c = report.convergence(at, budget)
    g = sns.relplot(conv_c, x="evaluations", y="best_val_top1", hue="criterion", col="model", kind="line",
                    errorbar="sd", height=3.2, aspect=1.5, facet_kws={"sharey": False})
    g.set_axis_labels("evaluations", "best feasible\nvalidation top-1 (%)")
    g.figure.tight_layout()
    report.save_figure(g.figure, "search_criteria", results)
    display(report.read_table("criterion_search", smoke, results))
else:
    print("this preset compares no criteria under search (search.compare_criteria is empty)")
