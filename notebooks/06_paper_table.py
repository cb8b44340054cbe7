# %% [markdown]
# # 6. The paper-style table
#
# Paper: L. Guerra, B. Zhuang, I. Reid, T. Drummond, *Automatic Pruning for Quantized Neural Networks*, arXiv:2002.00523 (2020).
#
# **The paper's full text is not reproduced here.** This package implements what its abstract states; where the paper is silent, this package chooses, and every choice is a parameter (see the README's *Choices where the paper is silent*).
#
# BNN and 2-bit DoReFa ResNet-20, unpruned and pruned at each size target (26.12 % of the model size, the paper's figure, by default) with the BO ratios and the uniform ratio, each fine-tuned the same way: top-1 on the test set (mean and std over fine-tuning seeds), size in MB computed from the loaded models, pruned percentage, and the size on disk of the packed file. The paper's ImageNet figures are beside ours: **a different dataset, architecture and scale**, not a like-for-like comparison.

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
from IPython.display import display

from qrepro import report

sns.set_theme(style="whitegrid", context="notebook")

# %% [markdown]
# ## How long to fine-tune: the recovery curve
#
# Pruning costs accuracy at once; fine-tuning wins some or all of it back. To choose the length of the final fine-tune, one configuration (the BNN at the uniform ratio that removes half the size, the hardest case) is fine-tuned for several lengths, each with its own cosine schedule as a final model's. The final models use the length the preset gives (`final.epochs`, the dash-dotted line); where the curve still climbs past it, a longer fine-tune would close more of the gap (the README's *Protocol* says what the budget allowed).

# %%
settings = report.study_settings(smoke)
if settings["final"]["recovery_epochs"]:
    rec = report.read_table("recovery", smoke, results)
    base = report.read_json("test_metrics", smoke, results)["base"][settings["final"]["recovery_model"]]["test_acc"]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(rec.epochs, rec.test_acc, "o-", label="pruned, fine-tuned (test)")
    ax.plot(rec.epochs, rec.val_acc, "s--", label="pruned, fine-tuned (validation)")
    ax.axhline(base, color="k", lw=1, label="unpruned (test)")
    ax.axhline(rec.val_acc_before.iloc[0], color="grey", ls=":", label="pruned, before fine-tuning (validation)")
    ax.axvline(settings["final"]["epochs"], color="C3", lw=1, ls="-.", label="the finals' length")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("fine-tuning epochs")
    ax.set_ylabel("top-1 (%)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes, over no point
    report.save_figure(fig, "recovery", results)
    display(rec)
else:
    print("this preset measures no recovery curve (final.recovery_epochs is empty)")

# %% [markdown]
# ## The table

# %%
table = report.read_table("paper_table", smoke, results)
table

# %% [markdown]
# ## Accuracy against size of the fine-tuned models
#
# The table above as a picture: each fine-tuned model's test top-1 (mean, with the standard deviation over fine-tuning seeds as a bar) against its size; BO and the uniform ratio at the same target sit side by side, the unpruned model at the right.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for ax, (model, rows) in zip(axes, table.groupby("model", sort=False)):
    for method, marker, color in (("unpruned", "*", "k"), ("uniform", "s", "C1"), ("bo", "o", "C0")):
        pick = rows[rows.configuration.str.startswith(method) & (rows.criterion.fillna("redundancy") == "redundancy")]
        ax.errorbar(pick.size_MB * 1024, pick.test_top1_mean, yerr=pick.test_top1_std, fmt=marker, color=color,
                    ms=8 if method == "unpruned" else 6, capsize=3, label=method)
    ax.set_xlabel("size (KiB)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(model)
axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), title="configuration")
report.save_figure(fig, "final_accuracy_size", results)

# %% [markdown]
# ## The paper's claims, tested
#
# For both quantized models and both size targets: BO's per-layer ratios against the uniform ratio after the same fine-tune (mean and spread over the fine-tuning seeds), and the gap between each pruned model and its unpruned base, against the goals stated in the table's note.

# %%
report.read_table("claims", smoke, results)

# %%
report.read_table("paper_reference", smoke, results)
