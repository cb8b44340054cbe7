# %% [markdown]
# # 1. Quantizers, and why filter norms stop working after binarization
#
# Paper: L. Guerra, B. Zhuang, I. Reid, T. Drummond, *Automatic Pruning for Quantized Neural Networks*, arXiv:2002.00523 (2020).
#
# **The paper's full text is not reproduced here.** This package implements what its abstract states; where the paper is silent, this package chooses, and every choice is a parameter (see the README's *Choices where the paper is silent*).
#
# For teaching. The forward functions and straight-through gradients of BNN (XNOR-style) binarization and DoReFa-Net k-bit quantization; the latent and quantized weights of a trained layer; what filter norms do and do not say after binarization; and how many filters of the trained networks repeat each other, the redundancy this package's criterion removes.

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

# %% [markdown]
# ## Forward and straight-through backward
#
# `sign` passes the gradient where `|x| <= 1` (Courbariaux et al. 2016); DoReFa's `round` passes it unchanged, its clip to `[0, 1]` does not outside that interval.

# %%
from qrepro.quantize import binarize_activation, dorefa_activation, dorefa_weight

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
axes[1].set_title("DoReFa activation\nquantize_k(clip(x, 0, 1))")
w = torch.linspace(-2.5, 2.5, 701)
for k in (1, 2, 3):
    axes[2].plot(w, dorefa_weight(w, k), label=f"{k}-bit")
axes[2].set_title("DoReFa weights\n(a layer spanning [-2.5, 2.5])")
for ax in axes:
    ax.legend(fontsize=8)
    ax.set_xlabel("input")
fig.tight_layout()
report.save_figure(fig, "quantizers_ste", results)

# %% [markdown]
# ## Latent against quantized weights of a trained layer

# %%
bases = {k: report.load_base(k, smoke, results)[0] for k in report.QUANT_KINDS}
layer = "layer2.1.conv1"
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
for ax, (kind, model) in zip(axes, bases.items()):
    conv = model.get_submodule(layer)
    ax.hist(conv.weight.detach().flatten(), bins=80, alpha=0.6, density=True, label="latent")
    ax.hist(conv.quantized_weight().detach().flatten(), bins=80, alpha=0.6, density=True, label="quantized")
    ax.set_title(f"{report.LABELS[kind]}: {layer}")
    ax.legend()
report.save_figure(fig, "weight_histograms", results)

# %% [markdown]
# ## Filter norms after binarization
#
# A deployed XNOR filter is $\alpha_i\,\mathrm{sign}(w_i)$ with $\alpha_i = \frac{1}{D}\lVert w_i \rVert_1$ (this package's default, one scale per filter), so its L1 norm is
# $\lVert \alpha_i\,\mathrm{sign}(w_i) \rVert_1 = D\,\alpha_i = \lVert w_i \rVert_1$:
# **exactly the latent filter's norm**. An L1 criterion on the deployed filters is therefore the L1 criterion on the latent ones, and says nothing about the binary pattern. The scale-free codes $\mathrm{sign}(w_i) \in \{-1, +1\}^D$ all have norm $D$: norms cannot tell them apart, only how they differ from each other can (which is what the redundancy criterion measures). With `scaling="layer"` or `"none"` every deployed filter of a layer has the same norm.

# %%
conv = bases["bnn"].get_submodule(layer)
latent_l1 = conv.weight.detach().abs().flatten(1).sum(1)
code_l1 = conv.weight_codes().abs().sum(1)
fig, ax = plt.subplots(figsize=(7, 3.4))
deployed_l1 = conv.quantized_weight().detach().abs().flatten(1).sum(1)
ax.plot(latent_l1 / latent_l1.max(), "o", ms=5, label="latent weights")
ax.plot(deployed_l1 / latent_l1.max(), "x", ms=5, label="deployed alpha * sign(w)")
ax.plot(code_l1 / code_l1.max(), "s", ms=3, label="scale-free codes sign(w)")
ax.set_xlabel("filter")
ax.set_ylabel("L1 norm / max latent L1 norm")
ax.set_title(f"BNN {layer}: filter norms")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)  # beside the axes, over no point
report.save_figure(fig, "filter_norms", results)
print(f"deployed vs latent L1 norms: largest difference {(deployed_l1 - latent_l1).abs().max():.2e}; "
      f"distinct deployed norms: {deployed_l1.unique().numel()} of {len(deployed_l1)}; "
      f"distinct code norms: {code_l1.unique().tolist()}")

# %% [markdown]
# ## Exact and near duplicate filters
#
# For each filter, the fraction of its codes that differ from its nearest neighbour's (the closest other filter of the layer). Two random binary codes differ in half their positions on average, but a filter's *nearest* neighbour among $N - 1$ random ones is closer than that: the last column is that baseline, the mean nearest-neighbour fraction of $N$ uniformly random codes of the layer's length and number of levels (20 draws, seed 0). Trained filters below it repeat each other more than chance; for DoReFa part of the gap is only that trained weights use the middle levels more often than the outer ones, which uniformly random codes do not.

# %%
def random_nearest_neighbour(n: int, length: int, levels: int, draws: int = 20) -> float:
    """Mean nearest-neighbour fraction of differing codes among ``n`` uniformly random codes."""
    g = torch.Generator().manual_seed(0)
    means = []
    for _ in range(draws):
        c = torch.randint(0, levels, (n, length), generator=g)
        differ = (c[:, None, :] != c[None, :, :]).double().mean(-1)
        differ.fill_diagonal_(float("inf"))
        means.append(float(differ.min(1).values.mean()))
    return sum(means) / len(means)


dup = report.read_table("filter_duplicates", smoke, results)
levels = (1 / (1 - dup["random_codes_differing"])).round().astype(int)  # 2^k levels: 1 - 2^-k differ at random
dup["random_nn_differing"] = [random_nearest_neighbour(n, d, k) for n, d, k in
                              zip(dup["filters"], dup["length"], levels)]
dup.drop(columns="random_codes_differing").round(3)

# %% [markdown]
# The same comparison filter by filter: the nearest-neighbour fractions of every quantized block layer's filters, pooled, against those of random codes of the same layers' shapes (one draw each, seed 0).

# %%
def nearest_fractions(codes: torch.Tensor) -> torch.Tensor:
    differ = (codes[:, None, :] != codes[None, :, :]).double().mean(-1)
    differ.fill_diagonal_(float("inf"))
    return differ.min(1).values


fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), sharey=True)
g = torch.Generator().manual_seed(0)
for ax, (kind, model) in zip(axes, bases.items()):
    trained, random = [], []
    for name, m in model.named_modules():
        if name.endswith("conv1") and "layer" in name:
            codes = m.weight_codes()
            trained.append(nearest_fractions(codes))
            levels = 2 ** m.spec.w_bits  # the code's alphabet: 2 for binary, 2^k DoReFa levels
            random.append(nearest_fractions(torch.randint(0, levels, codes.shape, generator=g)))
    bins = torch.linspace(0, 0.8, 41)
    ax.hist(torch.cat(random), bins=bins, alpha=0.5, label="random codes", color="C7")
    ax.hist(torch.cat(trained), bins=bins, alpha=0.7, label="trained filters", color="C0")
    ax.set_xlabel("fraction of codes differing from the nearest neighbour")
    ax.set_title(report.LABELS[kind])
axes[0].set_ylabel("filters")
axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1))
report.save_figure(fig, "nearest_neighbour_distances", results)
