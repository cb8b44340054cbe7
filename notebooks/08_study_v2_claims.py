# %% [markdown]
# # 8. Study v2: the paper's network, and each claim decided by its own interval
#
# The committed ResNet-20 study could not tell BO from the uniform ratio, nor the paper's criterion from
# BatchNorm's |gamma|: two fine-tuning seeds of one pick, chosen on the images it was scored on. Study v2
# (`qrepro/presets/fmnist-resnet18.toml`; docs/study-v2.md) asks again on the paper's network, torchvision's
# ResNet-18 (ImageNet stem, one input channel, 10 classes), on Fashion-MNIST, designed as a doubting reviewer
# would want:
#
# - **paired seeds**: seed *s* is search *s* and fine-tune *s* of every arm, so each question is a paired difference
#   over seeds, with a 95 % t-interval;
# - **picks chosen on images nobody scores them on**: a search sees the first 2,000 validation images; its five best
#   candidates are re-scored on the other 3,000 and the best there is the pick; the claims use the 10,000 test images;
# - **equal size**: the uniform arm prunes at the smallest single ratio whose exact size is at most the BO pick's;
# - **the same fine-tune for every arm**, the unpruned model too (Adam, cosine, 1 epoch).
#
# **The questions, stated before the run** (`qrepro.tables.QUESTIONS`): (a) BO beats the uniform ratio at 26.12 %,
# 50 % and 70 %; (b) the redundancy criterion beats `bn_scale`, `l1`, `fpgm` and `random` under the same BO at
# 26.12 % (BNN); (c) BO beats random search at the same evaluation budget; (d) the BO pick stays within 1 point of
# the unpruned model after the same fine-tune; (e) the joint bit-width and pruning search beats the paper's setting
# (2 bits, BO over ratios) at the same size, before fine-tuning; (f) the search's objective ranks candidates as the
# fine-tuned test accuracy does. A claim is **supported** where its interval lies above the claimed bound, **not
# supported** where it lies below, and **inconclusive** where it straddles it.

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
from IPython.display import display

from qrepro import report

preset = "smoke" if smoke else "fmnist-resnet18"
progress = report.study_progress(preset, results)
display(progress)
fig, ax = plt.subplots(figsize=(7, 2.8))
ax.barh(progress["stage"], progress["usable"], color="tab:green", label="built")
ax.barh(progress["stage"], progress["left"], left=progress["usable"], color="tab:gray", label="left")
ax.invert_yaxis()
ax.set_xlabel("artifacts")
ax.legend(loc="lower right")
fig.tight_layout()
report.save_figure(fig, "study_v2_progress", results)
ready = not progress.set_index("stage").loc[["trials", "tables"], "left"].any()
print("Study v2 is complete: every claim below is read from its artifacts." if ready else
      f"Study v2 is in progress ({int(progress['left'].sum())} of {int(progress['artifacts'].sum())} artifacts left: "
      f"make study STUDY={preset} resumes it): the claims below are provisional, from the trials built so far.")

# %% [markdown]
# ## The pilot: how many seeds (a) needs
#
# Question (a)'s pairs built so far, each the BO pick's test top-1 minus the uniform ratio's at one seed. The run
# builds every (a) cell at seeds 0 and 1 before any other comparison (docs/study-v2.md); the standard deviation of
# the differences, pooled over the cells, sets the seeds a 95 % interval of half-width 0.3 points needs, by the rule
# fixed before the pilot. These are not claims: the claims are the intervals below.

# %%
pairs = report.pilot_pairs(preset, results)
spread, dof = report.pooled_spread(pairs)
display(pairs.round({"bo": 2, "uniform": 2, "bo_minus_uniform": 2}))
if dof:
    needed = report.seeds_needed(spread)
    print(f"pooled spread of BO - uniform: {spread:.2f} points ({dof} degrees of freedom); a 95 % half-width of "
          f"0.3 points needs {needed or 'over 200'} seeds per cell")
else:
    print(f"{len(pairs)} pairs built; the spread needs two seeds of one cell")
if len(pairs):
    cells = pairs.groupby(["model", "target", "epochs"], sort=True).bo_minus_uniform
    fig, ax = plt.subplots(figsize=(6, 0.4 * cells.ngroups + 1.4))
    for row, ((model, target, epochs), diffs) in enumerate(cells):
        ax.scatter(diffs, [row] * len(diffs), color="tab:blue")
    ax.set_yticks(range(cells.ngroups), [f"{m} {100 * t:.2f} %, {e:g} ep." for m, t, e in cells.groups])
    ax.axvline(0, color="black", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("BO pick - uniform ratio, test top-1 (points), one point per seed")
    fig.tight_layout()
    report.save_figure(fig, "pilot_pairs", results)

# %% [markdown]
# ## Every claim, with its interval
#
# One row per question, model, target and fine-tuning length; the difference is in test top-1 points ((f):
# Spearman's rho). `size_difference_KB` is the first arm's size minus the second's: the uniform arm is never larger
# than the BO pick it is compared with. `seeds_for_0.3` is stated, not run: the seeds a half-width of 0.3 points
# would take at the spread the row's own seeds show, where its half-width is wider. While the study runs, the rows
# are computed as the table will be, from the trials built so far (`seeds` says how many pairs each has), and
# (e) once every joint search is built.

# %%
claims, final = report.claims(preset, results)
print("The claims table the study wrote." if final else
      f"Provisional: {len(claims)} rows from the trials built so far, not the study's table.")
if len(claims):
    display(claims[["question", "model", "target", "epochs", "seeds", "difference", "low", "high", "half_width",
                    "seeds_for_0.3", "verdict", "size_difference_KB"]].round(3))

# %% [markdown]
# ## The forest plot
#
# Each paired difference and its 95 % interval; the dashed line is the bound the claim must clear (0, or -1 point
# for (d)). Colour: the verdict.

# %%
if len(claims):
    colours = {"supported": "tab:green", "not supported": "tab:red", "inconclusive": "tab:gray"}
    rows = claims.iloc[::-1].reset_index(drop=True)
    labels = [" ".join([f"({r.question}) {r.model}", "" if np.isnan(r.target) else f"{100 * r.target:.2f} %",
                        "" if r.question in "ef" else f"{r.epochs:g} ep.",
                        "" if r.question != "b" else r.claim.split("beats ")[1].split(" under")[0]]).rstrip()
              + f", n = {r.seeds}" for r in rows.itertuples()]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.32 * len(rows) + 1.5), sharey=True,
                             gridspec_kw={"width_ratios": [3, 1]})
    for ax, points in ((axes[0], rows["question"] != "f"), (axes[1], rows["question"] == "f")):
        for i, r in rows[points].iterrows():
            ax.errorbar(r["difference"], i, xerr=[[r["difference"] - r["low"]], [r["high"] - r["difference"]]],
                        fmt="o", color=colours[r["verdict"]], capsize=3)
            ax.axvline(r["least"], color="black", ls="--", lw=0.8) if r["question"] == "d" else None
        ax.axvline(0, color="black", lw=0.8)
    axes[0].set_yticks(range(len(rows)), labels)
    axes[0].set_xlabel("paired difference of top-1 (points), 95 % interval\n"
                       "test top-1 after fine-tuning; (e): validation top-1 before it")
    axes[1].set_xlabel("(f) Spearman's rho,\n95 % interval")
    axes[1].set_xlim(-1, 1)
    for verdict, colour in colours.items():
        axes[0].plot([], [], "o", color=colour, label=verdict)
    axes[0].legend(loc="lower right", fontsize="small")
    axes[0].set_title("" if final else "provisional: the trials built so far", loc="left", fontsize="small")
    fig.tight_layout()
    report.save_figure(fig, "claims_forest", results)

# %% [markdown]
# ## Does the search's objective predict the fine-tuned accuracy? (f)
#
# Candidates of one search, evenly spread over its ranking, each fine-tuned like every arm: the search's objective
# (validation top-1 after BatchNorm re-estimation, before fine-tuning) against the test top-1 after.

# %%
trials = report.trial_frame(preset, results, built_only=True)  # all of them once the study is complete
ranked = trials[trials["rank"].notna()].sort_values("rank") if len(trials) else trials
if len(ranked):
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(ranked["search_value"], ranked["test_top1"])
    for r in ranked.itertuples():
        ax.annotate(f"{int(r.rank)}", (r.search_value, r.test_top1), textcoords="offset points", xytext=(4, 2))
    ax.set_xlabel("search objective: validation top-1 before fine-tuning (%)")
    ax.set_ylabel("test top-1 after fine-tuning (%)")
    fig.tight_layout()
    report.save_figure(fig, "objective_vs_finetuned", results)

# %% [markdown]
# ## The network: base models and sizes
#
# The base models, each trained once by the ResNet-20 study's recipe (notebook 2 has ResNet-20's), the
# any-precision one evaluated at 2 bits; then each epoch's validation top-1. Below, the size of this ResNet-18
# under each counting convention beside the paper's ImageNet sizes: its 2.47 MB (BNN, 26.12 % removed) matches
# one convention, and the 1000-class classifier is most of the gap to the Fashion-MNIST network.

# %%
display(report.read_table("baselines", preset, results))
curves = report.training_curves(report.base_models(preset, results))
fig, ax = plt.subplots(figsize=(6, 3.4))
for model, curve in curves.groupby("model"):
    ax.plot(curve["epoch"], curve["val_acc"], marker="o", label=model)
ax.set_xlabel("epoch")
ax.set_ylabel("validation top-1 (%)")
ax.legend(fontsize="small")
fig.tight_layout()
report.save_figure(fig, "study_v2_training_curves", results)

# %%
report.read_table("resnet18_size", preset, results)

# %% [markdown]
# ## The criterion's premise: are binary filters redundant?
#
# The redundancy criterion removes filters that others nearly repeat. Per layer: exact duplicates among the
# filters' sign codes, near duplicates (at most a quarter of the codes differing), and the fraction of codes in
# which a filter differs from its nearest neighbour, beside that of random codes (0.5 for signs, 0.75 for 2-bit
# codes).

# %%
report.read_table("filter_duplicates", preset, results)

# %% [markdown]
# ## The searches before fine-tuning, and the criteria at uniform ratios
#
# Each setting's best feasible validation top-1 (the search's objective, on the images the searches see), mean over
# search seeds; the joint searches on the any-precision model, and that model at uniform bit-widths; then every
# criterion at uniform ratios after BatchNorm re-estimation (`bn`) and after a short fine-tune (`finetune`).

# %%
display(report.read_table("search_summary", preset, results))
display(report.read_table("joint_summary", preset, results))
display(report.read_table("precision_sweep", preset, results))
ablation = report.read_table("ablation_summary", preset, results)
ablation.pivot_table(index=["model", "stage", "ratio"], columns="criterion", values="val_top1_mean")

# %% [markdown]
# ## Every trial
#
# One row per arm and seed (while the study runs, those built so far): what each claim above is computed from.

# %%
display(trials.round(3))
