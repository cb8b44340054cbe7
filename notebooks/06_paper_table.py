# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

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
import seaborn as sns

from qrepro import report

sns.set_theme(style="whitegrid", context="notebook")

# %%
report.read_table("paper_table", smoke, results)

# %%
report.read_table("paper_reference", smoke, results)
