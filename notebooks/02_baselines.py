# %% [markdown]
# # 2. Quantized baselines
#
# Paper: L. Guerra, B. Zhuang, I. Reid, T. Drummond, *Automatic Pruning for Quantized Neural Networks*, arXiv:2002.00523 (2020).
#
# **The paper's full text is not reproduced here.** This package implements what its abstract states; where the paper is silent, this package chooses, and every choice is a parameter (see the README's *Choices where the paper is silent*).
#
# Full-precision, BNN and 2-bit DoReFa ResNet-20 on Fashion-MNIST (the offline default; the paper uses CIFAR-10 and ImageNet): test accuracy, parameters, size and training curves; and the ResNet-18 size accounting beside the paper's 2.47 MB and 4.36 MB.

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
bases = report.base_models(smoke, results)
report.read_table("baselines", smoke, results)

# %%
curves = report.training_curves(bases)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
sns.lineplot(curves, x="epoch", y="train_loss", hue="model", marker="o", ax=axes[0])
sns.lineplot(curves, x="epoch", y="val_acc", hue="model", marker="o", ax=axes[1])
axes[1].set_ylabel("validation top-1 (%)")
report.save_figure(fig, "training_curves", results)

# %% [markdown]
# ## ResNet-18 size accounting
#
# Under each convention, the unpruned size, that size minus 26.12 %, and the paper's pruned sizes. The paper's 2.47 MB (BNN) matches 26.12 % removed from the 1-bit ResNet-18; its 4.36 MB (DoReFa 2-bit) sits 6-7 % below the unpruned 2-bit model.

# %%
report.read_table("resnet18_size", smoke, results)
