# %% [markdown]
# # 5. The accuracy / size Pareto front
#
# Paper: L. Guerra, B. Zhuang, I. Reid, T. Drummond, *Automatic Pruning for Quantized Neural Networks*, arXiv:2002.00523 (2020).
#
# **The paper's full text is not reproduced here.** This package implements what its abstract states; where the paper is silent, this package chooses, and every choice is a parameter (see the README's *Choices where the paper is silent*).
#
# The multi-objective search (qLogNEHVI, the size a known deterministic objective) returns the non-dominated set of validation accuracy against model size; beside it, the same criterion at one uniform ratio for every layer (from the ablation, after BatchNorm re-estimation).

# %% tags=["parameters"]
smoke = False  # True: read the tiny smoke study (CI)
results = None  # results folder; None: results/

# %%
from qrepro.notebooks import check_parameters

smoke, results = check_parameters(smoke=smoke, results=results)  # papermill's values, validated

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import seaborn as sns
import torch

from qrepro import report

sns.set_theme(style="whitegrid", context="notebook")

# %%
sf = report.search_frame(smoke, results)
par = sf[sf["mode"] == "pareto"].copy()
kind = par.model.iloc[0]
par["size_MB"] = par.size_bytes / report.MB
from qrepro.gp import pareto_front
mask = pareto_front(torch.tensor(par[["value", "pruned_fraction"]].to_numpy(), dtype=torch.double)).numpy()
front = par[mask].sort_values("size_MB")
ab = report.ablation_frame(smoke, results)
uni = ab[(ab.model == kind) & (ab.criterion == "redundancy") & (ab.stage == "bn")].copy()
uni["size_MB"] = uni.size_bytes / report.MB
fig, ax = plt.subplots(figsize=(8, 4.4))
ax.scatter(par.size_MB, par.value, s=14, alpha=0.5, label="evaluated candidates")
ax.plot(front.size_MB, front.value, "o-", color="C3", label="Pareto front (BO)")
ax.plot(uni.size_MB, uni.val_acc, "s--", color="C2", label="uniform ratio")
ax.set_xlabel("model size (MB; the size convention is printed below)")
ax.set_ylabel("validation top-1 (%)")
ax.set_title(f"{report.LABELS[kind]} ResNet-20")
ax.legend()
report.save_figure(fig, "pareto_front", results)
print(report.DEFAULT_CONVENTION.describe())

# %%
report.read_table("pareto_front", smoke, results)

# %% [markdown]
# The hypervolume the front dominates, over candidates $0 \dots n-1$ in index order. The journal records a
# hypervolume with each evaluation in the order evaluations *finished*, which the concurrent workers make vary from
# run to run; in index order the curve is the same in every run (as the convergence curves of notebook 4).
#
# **The reference point** of every reported hypervolume (here, in lesson T2 and in the journals) is $(0\,\%, 0)$,
# the worst value of both objectives: fixed, so every evaluation counts and two runs compare. The search's
# acquisition measures improvement from just below the lowest accuracy observed instead (`qrepro.gp.ref_point`),
# where the front is (docs/choices.md, *Search*).

# %%
from qrepro.gp import hypervolume

par = par.sort_values("index")
pts = torch.tensor(par[["value", "pruned_fraction"]].to_numpy(), dtype=torch.double)
ref = torch.zeros(2, dtype=torch.double)  # the study's reference point: top-1 0 %, pruned fraction 0
hv = [hypervolume(pts[:n + 1], ref) for n in range(len(pts))]
assert abs(hv[-1] - par.hypervolume.max()) <= 1e-9 * max(1.0, hv[-1])  # all candidates: what the journal ends with
fig, ax = plt.subplots(figsize=(6, 3.4))
ax.plot(par["index"] + 1, hv, "o-", ms=3)
ax.set_xlabel("evaluations (candidates in index order)")
ax.set_ylabel("hypervolume (top-1 x pruned fraction)")
report.save_figure(fig, "pareto_hypervolume", results)
