# %% [markdown]
# # Lesson 1. Pruning quantized filters: the criterion, physical removal, BatchNorm
#
# Paper: L. Guerra, B. Zhuang, I. Reid, T. Drummond, *Automatic Pruning for Quantized Neural Networks*,
# arXiv:2002.00523 (2020). **The paper's full text is not reproduced here**: this package implements what its
# abstract states; where the paper is silent, it chooses, and every choice is a parameter (README, *Choices where
# the paper is silent*).
#
# **You will learn to**
# 1. write the forward and straight-through backward passes of XNOR binarization and DoReFa k-bit quantization;
# 2. compute the redundancy criterion by hand on a few binary filters and check it against `qrepro`;
# 3. remove filters physically from a trained binary ResNet-20 and prove the size with a packed file;
# 4. see why BatchNorm statistics must be re-estimated after pruning.
#
# Runs live in under a minute on 2 CPU cores; it reads only the committed base checkpoints (no study needed).

# %% tags=["parameters"]
smoke = False  # True: read the tiny smoke study's checkpoints (CI, or a loaded laptop)
results = None  # results folder; None: results/
solutions = False  # True: run every exercise's solution at the end (the tests do; Run All and make teach do not)
interactive = True  # False: no slider (make teach and the tests: a saved copy shows the printed line instead)

# %%
from qrepro.notebooks import check_parameters

smoke, results = check_parameters(smoke=smoke, results=results)  # papermill's values, validated

# %%
# %matplotlib inline
import copy
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns
import torch
from ipywidgets import FloatSlider, interact

from qrepro import report, study
from qrepro.criteria import LayerView, pairwise_distances, select_filters
from qrepro.export import save_packed
from qrepro.prune import prunable_layers, prune, recalibrate_batchnorm
from qrepro.quantize import binarize_weight, dorefa_weight
from qrepro.size import MB, model_size_bytes, size_breakdown
from qrepro.train import evaluate

_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. Quantizers and the straight-through estimator
#
# A BNN layer keeps **latent** full-precision weights $w$ and computes with their binarization. XNOR-Net scales
# each output filter $i$ by the mean magnitude of its weights:
#
# $$ w^b_i = \alpha_i \,\mathrm{sign}(w_i), \qquad \alpha_i = \frac{1}{D} \lVert w_i \rVert_1 ,
# \qquad \mathrm{sign}(0) = +1 . $$
#
# `sign` has zero gradient almost everywhere, so training uses the **straight-through estimator** (STE):
# the backward pass treats sign as the identity where the input is small, and $\alpha_i$, a function of the
# weights, passes its own gradient. With $g = \partial \mathcal{L} / \partial w^b_i$ for one filter of $D$ weights,
#
# $$ \frac{\partial \mathcal{L}}{\partial w_{ij}} \approx \alpha_i\, g_j\, \mathbf{1}_{|w_{ij}| \le 1}
# \;+\; \frac{\mathrm{sgn}(w_{ij})}{D} \sum_k g_k\, \mathrm{sign}(w_{ik}) , $$
#
# where $\mathrm{sgn}(0) = 0$ is the derivative of $|w|$ (the forward pass's $\mathrm{sign}(0) = +1$ is another
# function). A weight with $|w| > 1$ still gets the second term.
#
# DoReFa-Net quantizes $r \in [0, 1]$ to $k$ bits with
# $ \mathrm{quantize}_k(r) = \frac{1}{2^k - 1}\,\mathrm{round}\big((2^k - 1)\, r\big) $ and maps weights, for
# $k \ge 2$, through
#
# $$ w^q = 2\,\mathrm{quantize}_k\!\Big(\frac{\tanh w}{2 \max |\tanh w|} + \frac12\Big) - 1 , $$
#
# with the identity as the gradient of `round`; for $k = 1$ it uses $w^q = \mathbb{E}|w|\,\mathrm{sign}(w)$, one
# scale for the whole layer.

# %%
w = torch.tensor([[0.5, -0.25, 0.0, 1.25], [-2.0, 1.0, -1.0, 0.0]], requires_grad=True)
wb = binarize_weight(w)  # alpha = 0.5 and 1.0: check by hand
print("binarized:\n", wb.detach())
wb.sum().backward()  # g = 1 everywhere
print("STE gradient from autograd:\n", w.grad)
with torch.no_grad():  # the equation above, written out
    alpha = w.abs().mean(1, keepdim=True)
    by_hand = alpha * (w.abs() <= 1) + torch.sign(w) / w.shape[1] * torch.where(w >= 0, 1.0, -1.0).sum(1, keepdim=True)
print("the equation gives the same:", torch.allclose(by_hand, w.grad))
print("DoReFa 2-bit levels of a spread of weights:", dorefa_weight(torch.linspace(-2, 2, 9), 2).tolist())

# %% [markdown]
# ## 2. The redundancy criterion on a handful of binary filters
#
# With the scales divided out, a binary filter is a code $c_i \in \{-1, +1\}^D$. Every code has the same norm
# $\sqrt{D}$, so norms cannot rank them; what distinguishes codes is how often they repeat each other. The
# **Hamming distance** counts the positions where two codes differ:
#
# $$ d_H(c_i, c_j) = \frac{D - \langle c_i, c_j \rangle}{2} . $$
#
# The criterion (this package's reading of "selecting redundant low-precision filters") removes filters greedily:
# while the layer has more filters than it keeps, take the **closest pair** $(i, j)$ among the kept filters and
# remove the member with the smaller BatchNorm scale $|\gamma|$ (the tie-break; the geometric median is an option).
# Exact duplicates ($d_H = 0$) therefore go first. Hamming distances are integers, so pairs at equal distance are
# common: among them the pair first in row order goes first (smallest $i$, then smallest $j$), and of two members
# with equal $|\gamma|$ the higher index is removed.
#
# Below: six filters of length $D = 9$; filter 4 is filter 1 with one sign flipped, filter 5 a copy of filter 0.

# %%
codes = torch.where(torch.rand(6, 9, generator=torch.Generator().manual_seed(0)) < 0.5, -1.0, 1.0)  # the same each run
codes[4] = codes[1]
codes[4, 3] *= -1
codes[5] = codes[0]
gamma = torch.tensor([0.9, 0.3, 0.8, 0.25, 0.6, 0.2])  # |gamma| of the BatchNorm after each filter
d = pairwise_distances(codes, "binary")
fig, ax = plt.subplots(figsize=(4.6, 3.8))
sns.heatmap(d.numpy(), annot=True, fmt=".0f", cmap="viridis", square=True, cbar_kws={"label": "Hamming distance"},
            ax=ax)
ax.set_title("Hamming distances between codes")
ax.set_xlabel("filter")
ax.set_ylabel("filter")
plt.show()

# %% [markdown]
# Keeping 4 of 6 filters: the closest pair is (0, 5) at distance 0, and filter 5 has the smaller $|\gamma|$, so it
# goes; then (1, 4) at distance 1, and filter 1 ($|\gamma| = 0.3$ against $0.6$) goes: filters 0, 2, 3, 4 stay.
# Check it, beside two baselines:

# %%
view = LayerView("toy", codes, codes, "binary", gamma=gamma, beta=torch.zeros(6))
for criterion in ("redundancy", "bn_scale", "l1"):
    print(f"{criterion:>10} keeps {select_filters(view, 4, criterion).keep.tolist()}")

# %% [markdown]
# `bn_scale` (network slimming) removes the two smallest $|\gamma|$, filters 5 and 3: it keeps the near-duplicate
# pair 1 and 4 and drops filter 3, whose code is unlike any other. `l1` on these codes cannot rank anything (every
# code has the same norm) and keeps the first four. **Try it**: set `gamma[1] = 0.95` and predict which filter of
# the pair (1, 4) the redundancy criterion removes now.

# %% [markdown]
# ## 3. Physical removal on a trained binary ResNet-20
#
# A pruned filter disappears: its output channel, its BatchNorm channel and the matching input channel of the next
# convolution. By default the first convolution of every basic block is pruned, so every residual sum keeps its
# width. The model size counts $k$ bits per quantized weight, 32 per full-precision weight, scale and bias, and two
# 32-bit numbers per BatchNorm channel:
#
# $$ \text{size} = \tfrac{1}{8}\Big( k\,N_q + 32\,(N_{fp} + N_{scale} + 2 N_{bn}) \Big) \text{ bytes} . $$

# %%
bnn, payload = report.load_base("bnn", smoke, results)
ratio = 0.5  # try 0.25 and 0.75
pruned = prune(bnn, ratio, "redundancy")
for name in prunable_layers(bnn)[:3]:
    print(f"{name}: {tuple(bnn.get_submodule(name).weight.shape)} -> {tuple(pruned.get_submodule(name).weight.shape)}")
before, after = size_breakdown(bnn), size_breakdown(pruned)
print(f"size {before.bytes.sum() / MB:.4f} MB -> {after.bytes.sum() / MB:.4f} MB "
      f"({100 * (1 - after.bytes.sum() / before.bytes.sum()):.1f} % removed); {before.attrs['convention']}")
with tempfile.TemporaryDirectory() as tmp:
    packed = save_packed(Path(tmp) / "pruned.qrpk", pruned)
    print(f"packed file: {packed.stat().st_size / MB:.4f} MB on disk (1 bit per binary weight, plus a header)")
after.groupby("kind")[["params", "bytes"]].sum().round(1)

# %% [markdown]
# With the kernel running in JupyterLab, move the slider to see how the size follows the ratio (every layer pruned
# alike; BatchNorm, the stem and the head do not shrink, so the share removed grows more slowly than the ratio).

# %%
def size_at(ratio=ratio):
    """The model pruned at ``ratio``: its size and the share of the unpruned size it removes."""
    kept = model_size_bytes(prune(bnn, ratio, "redundancy"))
    print(f"ratio {ratio:.2f}: {kept / MB:.4f} MB, {100 * (1 - kept / model_size_bytes(bnn)):.1f} % of the size removed")


if interactive:
    _ = interact(size_at, ratio=FloatSlider(value=ratio, min=0.0, max=0.9, step=0.05, description="ratio"))
else:
    size_at(ratio)

# %% [markdown]
# ## 4. Why BatchNorm must be re-estimated
#
# Removing channels changes what every later layer sees; the running means and variances stored in BatchNorm were
# estimated on the unpruned network. Re-estimating them on a few training batches (no gradient step) makes them
# the pruned network's own. Whether that helps depends on how much the statistics moved: measured here on a few
# hundred validation images (the sentence under the chart is written from these numbers):

# %%
splits = study.load_study_data(smoke)
val = splits.val.subset(300 if not smoke else 64)
acc = {"unpruned": evaluate(bnn, val)["acc"], "pruned": evaluate(pruned, val)["acc"]}
recalibrated = recalibrate_batchnorm(copy.deepcopy(pruned), splits.train_eval, batches=5)  # `pruned` stays as it was
acc["pruned + BN re-estimated"] = evaluate(recalibrated, val)["acc"]
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.barh(list(acc), list(acc.values()), color=["C0", "C3", "C2"])
ax.set_xlabel("validation top-1 (%)")
for i, v in enumerate(acc.values()):
    ax.text(v + 0.5, i, f"{v:.1f}", va="center")
ax.set_xlim(0, 105)
plt.show()
change = acc["pruned + BN re-estimated"] - acc["pruned"]
print(f"At ratio {ratio}, re-estimating BatchNorm {'raised' if change > 0 else 'lowered'} validation top-1 by "
      f"{abs(change):.1f} points ({acc['pruned']:.1f} -> {acc['pruned + BN re-estimated']:.1f} %); the unpruned "
      f"model scores {acc['unpruned']:.1f} %.")

# %% [markdown]
# ## Exercises
#
# 1. Change `ratio` to 0.75 in section 3. What does BatchNorm re-estimation change now, and why more than at 0.5?
# 2. Prune the same model with `"bn_scale"` and with `"random"` (pass `criterion_options={"seed": 1}` for random)
#    at ratio 0.5 and compare, after re-estimation, with `"redundancy"`.
# 3. Show that with `scaling="filter"` the deployed filter $\alpha_i\,\mathrm{sign}(w_i)$ has exactly the L1 norm of
#    the latent filter $w_i$. What does that mean for an L1 criterion applied after binarization?
#
# Each solution is a file beside this lesson, not run by *Run All*: to see one, type `%load solutions/T1_1.py` in a
# new cell and run that cell twice (the first run loads the code, the second runs it).

# %%
if solutions:  # the tests set this: every solution runs here, after the lesson
    for path in sorted(Path("solutions").glob("T1_*.py")):
        print(f"--- {path.name}")
        exec(compile(path.read_text(), str(path), "exec"))

# %% [markdown]
# ## Summary
#
# - A binary filter is $\alpha_i \mathrm{sign}(w_i)$: its scale-free code is what distinguishes it, and codes that
#   repeat each other are what the redundancy criterion removes first.
# - Pruning removes a filter physically (its channel, its BatchNorm channel and the next layer's input channel); the
#   size formula and the packed file measure what it saves.
# - BatchNorm statistics belong to the network they were measured on: after pruning, re-estimate them.
#
# **Prerequisites**: PyTorch modules and autograd; binary and k-bit numbers. **Next**: lesson T2 searches one ratio
# per layer instead of one for all.
#
# **References**: M. Rastegari et al., *XNOR-Net*, ECCV 2016; M. Courbariaux et al., *Binarized Neural Networks*,
# NeurIPS 2016; S. Zhou et al., *DoReFa-Net*, arXiv:1606.06160; Y. Bengio et al., *Estimating or propagating
# gradients through stochastic neurons* (the straight-through estimator), arXiv:1308.3432; Z. Liu et al.,
# *Learning efficient convolutional networks through network slimming* (`bn_scale`), ICCV 2017; L. Guerra et al.,
# arXiv:2002.00523.
