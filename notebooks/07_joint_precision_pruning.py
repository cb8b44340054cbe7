# %% [markdown]
# # 7. Beyond the paper: each layer's bit-width and pruning ratio, searched together
#
# The paper fixes one precision for the whole network and searches how many filters each layer keeps. Here each
# ResNet block (its two convolutions) also gets its own bit-width from {1, 2, 4, 8} (weights and activations), and
# Bayesian optimization searches the bit-widths and the ratios together under one size budget: the joint search.
#
# **The model.** A candidate must cost an evaluation, not a training run, so one DoReFa ResNet-20 is trained with
# every quantized layer at a bit-width drawn anew at each step (per-layer random precision, as in Bit-Mixer,
# Bulat and Tzimiropoulos 2021; Any-Precision DNNs, Yu et al. 2021, and AdaBits, Jin et al. 2020, switch the whole
# network at once). Our choices: one set of BatchNorms shared by every bit-width, re-estimated for the chosen
# bit-widths before each evaluation (as every pruned candidate's already is), and the DoReFa recipe of the
# dedicated 2-bit model (same epochs, optimizer and start from the full-precision model).
#
# **The comparisons, stated before the searches ran** (each at the same size budget, the same evaluation budget
# and the same evaluation of a candidate; the budget is a fraction of the any-precision model's size at 2 bits):
#
# 1. joint BO against the paper's setting on the same model: one precision (2-bit, or 1-bit) with BO over ratios;
# 2. joint BO against random joint search (is the GP worth it in 18 dimensions?);
# 3. joint BO against the bit-widths alone (BO over bit-widths without pruning: the HAQ question, answered with BO).
#
# Every number below is the best feasible *validation* accuracy a search found, before fine-tuning, on the images
# every candidate was scored on: the searches' objective, not a test result.

# %% tags=["parameters"]
smoke = False  # True: read the tiny smoke study (CI)
results = None  # results folder; None: results/

# %%
from qrepro.notebooks import check_parameters

smoke, results = check_parameters(smoke=smoke, results=results)  # papermill's values, validated

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from IPython.display import display
from scipy import stats

from qrepro import report

sns.set_theme(style="whitegrid", context="notebook")
settings = report.study_settings(smoke)
joint = settings["joint"]
print({k: joint[k] for k in ("settings", "targets", "seeds", "budget", "n_init", "bit_choices")})

# %% [markdown]
# ## One model at every precision
#
# The any-precision model at uniform bit-widths, beside the models trained for one precision, each after the same
# BatchNorm re-estimation. How much the shared training costs at 2 bits is the gap to the dedicated 2-bit model;
# the dedicated BNN is a different scheme (sign activations, per-filter scales), shown for scale.

# %%
sweep = report.read_table("precision_sweep", smoke, results)
display(sweep)
fig, ax = plt.subplots(figsize=(6.5, 3.6))
anyp = sweep[sweep.model == "any-precision"]
ax.plot(anyp.w_bits, anyp.test_acc, "o-", label="any-precision (one model)")
for (label, row), marker in zip(sweep[sweep.model != "any-precision"].iterrows(), ("s", "D")):
    ax.plot(row.w_bits, row.test_acc, marker, ms=9, label=row.model)
ax.set_xscale("log", base=2)
ax.set_xticks(anyp.w_bits, [f"{b}" for b in anyp.w_bits])
ax.set_xlabel("bits (weights and activations, every quantized layer)")
ax.set_ylabel("test top-1 (%)")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
report.save_figure(fig, "precision_sweep", results)

# %% [markdown]
# ## The searches against their baselines

# %%
summary = report.read_table("joint_summary", smoke, results)
summary

# %% [markdown]
# Paired by seed (each setting's search with seed *s* starts from its own Sobol design, so the pairing matches
# evaluation budgets, not candidates): the difference of the best values, joint BO minus each baseline, with a
# 95 % t-interval over the seeds. With two seeds the interval is wide: it says how little two seeds decide.

# %%
everything = report.joint_frame(smoke, results)
jf = everything[everything.setting != "joint-pareto"]  # the searches under a size budget
best = jf[jf.feasible].groupby(["setting", "target", "seed"]).value.max().unstack("setting")
rows = []
for other in [s for s in joint["settings"] if s not in ("joint-bo", "joint-pareto")]:
    for target, g in best.groupby(level="target"):
        d = (g["joint-bo"] - g[other]).dropna()
        half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else np.nan
        rows.append({"joint-bo minus": other, "target": target, "seeds": len(d), "mean": d.mean(),
                     "95% low": d.mean() - half, "95% high": d.mean() + half})
pd.DataFrame(rows).round(2)

# %% [markdown]
# ## What the joint search chose
#
# The best configuration of the joint search (over its seeds) at each target: each block's bit-width and the
# fraction of its filters removed. Blocks are named by their first convolution.

# %%
pick = jf[jf.feasible & (jf.setting == "joint-bo")].sort_values("value").groupby("target").tail(1)
fig, axes = plt.subplots(len(pick), 2, figsize=(12, 2.6 * len(pick)), squeeze=False)
for (ax_bits, ax_ratio), (_, row) in zip(axes, pick.iterrows()):
    names = [n.replace(".conv1", "") for n in row.bits]
    ax_bits.bar(names, list(row.bits.values()), color="C0")
    ax_bits.set_yscale("log", base=2)
    ax_bits.set_yticks(joint["bit_choices"], [str(b) for b in joint["bit_choices"]])
    ax_bits.set_ylabel("bits")
    ax_bits.set_title(f"target {row.target:g}: bit-width per block (top-1 {row.value:.2f} %)", fontsize=10)
    ax_ratio.bar(names, list(row.ratios.values()), color="C1")
    ax_ratio.set_ylim(0, 1)
    ax_ratio.set_ylabel("ratio pruned")
    ax_ratio.set_title(f"target {row.target:g}: fraction of filters removed", fontsize=10)
    for ax in (ax_bits, ax_ratio):
        ax.tick_params(axis="x", rotation=45, labelsize=8)
fig.tight_layout()
report.save_figure(fig, "joint_choices", results)

# %% [markdown]
# ## Accuracy against size: the joint search's front and the paper's
#
# Every evaluated candidate of every budgeted search (all targets and seeds), and for each setting the
# non-dominated set of validation accuracy against size: where the joint search's front lies above the
# single-precision fronts, mixing bit-widths buys accuracy at equal size.

# %%
from qrepro.gp import pareto_front

fig, ax = plt.subplots(figsize=(8.5, 4.6))
for i, (setting, g) in enumerate(jf.groupby("setting", sort=False)):
    kb = g.size_bytes / 1024
    ax.scatter(kb, g.value, s=10, alpha=0.35, color=f"C{i}")
    pts = torch.tensor(np.c_[g.value, -g.size_bytes], dtype=torch.double)
    front = g[pareto_front(pts).numpy()].sort_values("size_bytes")
    ax.plot(front.size_bytes / 1024, front.value, "o-", ms=4, color=f"C{i}", label=setting)
unpruned = float((jf.size_bytes / (1 - jf.pruned_fraction)).iloc[0])  # the budgets' reference: 2 bits, unpruned
for t in joint["targets"]:
    ax.axvline((1 - t) * unpruned / 1024, color="grey", ls=":", lw=1)
ax.set_xlabel("model size (KiB; dotted: the size budgets)")
ax.set_ylabel("validation top-1 (%)")
ax.legend(title="search", loc="upper left", bbox_to_anchor=(1.01, 1))
report.save_figure(fig, "joint_front", results)
print(report.DEFAULT_CONVENTION.describe())

# %% [markdown]
# ## The front itself: accuracy against size and bit-operations, searched with qLogNEHVI
#
# The `joint-pareto` search has no budget: it maximizes validation accuracy, the fraction of the size removed and
# the fraction of the bit-operations removed together (qLogNEHVI, the reference point at accuracy 0 and the
# unpruned model at the highest bit-width), 40 evaluations per seed. Its non-dominated candidates, beside the
# non-dominated candidates the paper's setting (2 bits, BO over ratios, at the size budgets) evaluated. The two
# spent their evaluations differently (the front search across every size, the budgeted searches near their
# budgets, on more evaluations in all): read each curve as what that search found, not as a matched comparison.

# %%
front_search = everything[everything.setting == "joint-pareto"]
paper = everything[everything.setting == "2bit-bo"]
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
for ax, x, label in ((axes[0], "size_bytes", "model size (KiB)"), (axes[1], "bops", "bit-operations per image (G)")):
    scale = 1024 if x == "size_bytes" else 1e9
    for i, (name, g) in enumerate((("joint-pareto (qLogNEHVI, no budget)", front_search),
                                   ("2bit-bo (the paper's setting)", paper))):
        ax.scatter(g[x] / scale, g.value, s=10, alpha=0.3, color=f"C{i}")
        pts = torch.tensor(np.c_[g.value, -g[x]], dtype=torch.double)
        nd = g[pareto_front(pts).numpy()].sort_values(x)
        ax.plot(nd[x] / scale, nd.value, "o-", ms=4, color=f"C{i}", label=name)
    ax.set_xlabel(label)
    ax.set_ylabel("validation top-1 (%)")
axes[0].legend(loc="lower right", fontsize="small")
fig.tight_layout()
report.save_figure(fig, "joint_pareto_search", results)

# %% [markdown]
# ## Convergence
#
# Best feasible validation accuracy over the candidates evaluated so far (index order), mean over seeds.

# %%
rows = []
for (setting, target, seed), g in jf.groupby(["setting", "target", "seed"]):
    b = g.sort_values("index").value.where(g.sort_values("index").feasible.astype(bool)).cummax().ffill()
    rows += [{"setting": setting, "target": target, "seed": seed, "evaluations": n + 1, "best": v}
             for n, v in enumerate(b)]
conv = pd.DataFrame(rows)
g = sns.relplot(data=conv, x="evaluations", y="best", hue="setting", col="target", kind="line", errorbar=None,
                height=3.4, aspect=1.3)
g.set_axis_labels("evaluations", "best validation top-1 (%)")
report.save_figure(g.figure, "joint_convergence", results)

# %% [markdown]
# ## Summary
#
# - The any-precision model is evaluated at any per-block bit-width after BatchNorm re-estimation; the table above
#   says what the shared training costs against the dedicated models.
# - Size and bit-operations of a candidate are known functions of its bit-widths and ratios
#   (`qrepro.precision.PrecisionCost`, equal to the pruned model's measured size to the byte in the tests), so no
#   candidate over the budget is ever evaluated.
# - Whether mixing bit-widths wins at equal size is read off the paired differences above, with their intervals;
#   the README states the verdict in words.
#
# References: Guerra et al. 2020 (arXiv:2002.00523); Zhou et al. 2016, DoReFa-Net (arXiv:1606.06160); Yu et al.
# 2021, Any-Precision Deep Neural Networks (AAAI); Jin et al. 2020, AdaBits (CVPR); Bulat and Tzimiropoulos 2021,
# Bit-Mixer (ICCV); Wang et al. 2019, HAQ (CVPR); Daulton et al. 2021, qNEHVI (NeurIPS).
