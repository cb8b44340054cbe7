# %% [markdown]
# # 3. Criteria ablation
#
# Paper: L. Guerra, B. Zhuang, I. Reid, T. Drummond, *Automatic Pruning for Quantized Neural Networks*, arXiv:2002.00523 (2020).
#
# **The paper's full text is not reproduced here.** This package implements what its abstract states; where the paper is silent, this package chooses, and every choice is a parameter (see the README's *Choices where the paper is silent*).
#
# Every criterion at uniform pruning ratios (the first convolution of every basic block), on the trained BNN and 2-bit DoReFa ResNet-20, after BatchNorm re-estimation (no gradient step) and after a short fine-tune. Validation top-1 on the held-out split (the test set is kept for the final table); the random criterion is the mean and standard deviation over seeds. `redundancy` is this package's reading of the paper's criterion (closest pair of quantized filters, `|gamma|` tie-break); `redundancy-gm` uses the geometric-median tie-break.

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

from qrepro import report

sns.set_theme(style="whitegrid", context="notebook")

# %%
df = report.ablation_frame(smoke, results)
summary = report.read_table("ablation_summary", smoke, results)
summary[summary.stage == "bn"].pivot_table(index=["model", "ratio"], columns="criterion", values="val_top1_mean")

# %%
bn = df[df.stage == "bn"]
fig, axes = plt.subplots(1, 2, figsize=(13, 4), sharey=True)
for ax, kind in zip(axes, report.QUANT_KINDS):
    sns.lineplot(bn[bn.model == kind], x="ratio", y="val_acc", hue="criterion", style="criterion", markers=True,
                 errorbar="sd", ax=ax)
    ax.set_title(f"{report.LABELS[kind]}: after BN re-estimation")
    ax.set_ylabel("validation top-1 (%)")
axes[0].get_legend().remove()  # one legend, beside the second panel, over no line
sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title="criterion")
report.save_figure(fig, "ablation_bn", results)

# %%
ft = df[df.stage == "finetune"]
fig, ax = plt.subplots(figsize=(9, 3.6))
sns.barplot(ft, x="criterion", y="val_acc", hue="model", errorbar="sd", ax=ax)
ax.set_ylabel("validation top-1 (%)")
ax.set_title(f"after a short fine-tune at ratio {ft.ratio.iloc[0]}")
sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), title="model")
report.save_figure(fig, "ablation_finetune", results)

# %% [markdown]
# ## Per-layer sensitivity
#
# Each prunable layer pruned **alone** at each ratio (the search's criterion; every other layer unpruned), after the
# same BatchNorm re-estimation: the points of validation top-1 lost against the unpruned model re-estimated the same
# way. A layer that loses little can be pruned hard; a uniform ratio prunes every layer alike, which is what a
# per-layer search can improve on. Each cell is one evaluation: where a row is not monotone in the ratio, the
# difference lies within the noise of one evaluation (about a point; notebook 4).

# %%
sens = report.sensitivity_frame(smoke, results)
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
for ax, kind in zip(axes, report.QUANT_KINDS):
    s = sens[sens.model == kind]
    unpruned = float(s[s.layer == "unpruned"].val_acc.iloc[0])
    drop = (unpruned - s[s.layer != "unpruned"].pivot_table(index="layer", columns="ratio", values="val_acc",
                                                               sort=False)).round(1) + 0.0  # no "-0.0"
    sns.heatmap(drop, annot=True, fmt=".1f", cmap="rocket_r", vmin=0, ax=ax, cbar=ax is axes[-1],
                cbar_kws={"label": "top-1 lost (points)"})
    ax.set_title(f"{report.LABELS[kind]} (unpruned {unpruned:.1f} %)")
    ax.set_xlabel("this layer's pruning ratio (the others 0)")
    ax.set_ylabel("layer")
fig.tight_layout()
report.save_figure(fig, "layer_sensitivity", results)
