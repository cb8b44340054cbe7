# %% [markdown]
# # Lesson 4. Bit-widths and pruning ratios, searched together
#
# The paper (L. Guerra, B. Zhuang, I. Reid, T. Drummond, *Automatic Pruning for Quantized Neural Networks*,
# arXiv:2002.00523, 2020) fixes one precision for the whole network and searches each layer's pruning ratio. This
# lesson goes one step further: each block gets its own bit-width too, and one Bayesian-optimization loop chooses
# both under a size budget.
#
# **You will learn to**
# 1. account for the size and the bit-operations (BOPs) of a network whose layers have different bit-widths and
#    filter counts, by hand, and check the count against the package;
# 2. see why, once the bit-widths are fixed, the budget is a linear constraint on the ratios;
# 3. write a joint BO loop over a mixed space (discrete bit-widths, continuous ratios) and compare it with random
#    search under the same budget.
#
# Runs live in about a minute on 2 CPU cores on the committed any-precision checkpoint: a DoReFa ResNet-20 trained
# with every layer at a random bit-width from {1, 2, 4, 8} at each step, so it can be evaluated at any mix without
# retraining (notebook 7 says how it was trained). `qrepro.search` with `space="joint"` is the production version.

# %% tags=["parameters"]
smoke = False  # True: read the tiny smoke study's checkpoints (CI, or a loaded laptop)
results = None  # results folder; None: results/
budget = 10  # evaluations per method (BO: 4 random, then 6 guided)
solutions = False  # True: run every exercise's solution at the end (the tests do; Run All and make teach do not)

# %%
from qrepro.notebooks import check_parameters

smoke, results = check_parameters(smoke=smoke, results=results)  # papermill's values, validated
if not isinstance(budget, int) or budget < 6:
    raise ValueError(f"budget must be an integer of at least 6, got {budget!r}")

# %%
# %matplotlib inline
import copy
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from botorch.acquisition import LogExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms import Normalize, Standardize
from botorch.optim import optimize_acqf
from gpytorch.mlls import ExactMarginalLogLikelihood

from qrepro import report, study
from qrepro.objective import PruneObjective
from qrepro.precision import Candidate, PrecisionCost, bit_units, set_bits, unit_bits
from qrepro.prune import prunable_layers, prune
from qrepro.size import model_size_bytes

warnings.filterwarnings("ignore", module="botorch|linear_operator|gpytorch")
_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. Size and BOPs at mixed precision, by hand
#
# A convolution with $N$ filters of $C \times k \times k$ weights at $b$ bits stores $b\,N C k^2$ bits. It performs
# $\mathrm{MACs} = N C k^2 \cdot H_{out} W_{out}$ multiply-accumulates per image, and at $b_w$-bit weights and
# $b_a$-bit inputs each costs about $b_w b_a$ bit-operations, so
#
# $$ \mathrm{BOPs} = \sum_\ell \mathrm{MACs}_\ell \; b_{w,\ell}\, b_{a,\ell}
# \qquad(\text{full-precision layers: } 32 \times 32). $$
#
# One unit of the search is a ResNet block: its first convolution (whose filters are pruned) and its second
# (which loses the matching inputs) share one bit-width, for weights and inputs alike. Pruning a fraction $r$ of
# the first convolution's filters removes that fraction of both convolutions' weights and MACs, and of the first
# one's BatchNorm channels.

# %%
model, _ = report.load_base("anyprec", smoke, results)
splits = study.load_study_data(smoke)
layers = prunable_layers(model)
units = bit_units(model, layers)
shape = tuple(next(iter(splits.val))[0].shape[1:])
cost = PrecisionCost.from_model(model, shape, layers)
print("unit layer2.1.conv1 sets the bits of", units["layer2.1.conv1"])

block = "layer2.1"
conv1, conv2 = model.get_submodule(f"{block}.conv1"), model.get_submodule(f"{block}.conv2")
h = w = shape[1] // 2  # layer2 runs at half the input resolution
bits, ratio = 4, 0.25
kept = int((1 - ratio) * conv1.out_channels)
weights = kept * conv1.weight[0].numel() + conv2.out_channels * kept * conv2.weight[0, 0].numel()
print(f"{block} at {bits} bits, {ratio:.0%} of conv1's filters removed: {weights} weights, "
      f"{weights * bits / 8:.0f} bytes of codes, {weights * h * w * bits * bits / 1e6:.1f} M BOPs per image")

# %% [markdown]
# The same numbers for the whole network, from `PrecisionCost`, against the size measured on a pruned copy of the
# model at those bit-widths (`qrepro.size.model_size_bytes`: every stored number counted). They agree to the byte.

# %%
b = {n: 2 for n in layers} | {f"{block}.conv1": bits}
r = {n: 0.0 for n in layers} | {f"{block}.conv1": ratio}
pruned = prune(set_bits(copy.deepcopy(model), unit_bits(units, b)), r, "l1")
bv, rv = torch.tensor([list(b.values())], dtype=torch.double), torch.tensor([list(r.values())], dtype=torch.double)
print(f"PrecisionCost: {float(cost.size(bv, rv)[0]):.0f} bytes; measured: {model_size_bytes(pruned):.0f} bytes")
assert float(cost.size(bv, rv)[0]) == model_size_bytes(pruned)

zero = torch.zeros(1, len(layers), dtype=torch.double)
uniform = pd.DataFrame([{"bits": k, "size (KiB)": float(cost.size(zero + k, zero)[0]) / 1024,
                         "GBOPs": float(cost.bops(zero + k, zero)[0]) / 1e9} for k in (1, 2, 4, 8)])
uniform.round(3)

# %% [markdown]
# ## 2. The budget is linear in the ratios once the bits are fixed
#
# With the bit-widths $b$ chosen, every term above is a constant times $(1 - r_\ell)$, so
# $\text{size}(b, r) = c(b) - a(b)^\top r$: the budget $\text{size} \le (1 - \tau) S_0$ is one linear inequality in
# $r$, as in the paper's search (lesson 2), with coefficients that depend on $b$. The joint search therefore works
# in two layers: choose bit-widths (discrete), then maximize over the ratios under that linear constraint
# (continuous), exactly as `optimize_acqf` does in lesson 2.

# %%
tau, r_max, choices = 0.2612, 0.9, (1, 2, 4, 8)
budget_bytes = (1 - tau) * cost.base
d = len(layers)
objective = PruneObjective(model, splits, bn_batches=3, val_images=300 if not smoke else 64)


def decode(x):
    """x in [0, 1]^(2d): ratios r_max * x[:d]; bit-widths the grid points x[d:] = i / 3 -> choices[i]."""
    return x[:d] * r_max, torch.tensor(choices, dtype=torch.double)[(x[d:] * 3).round().long()]


def size_constraint(bits):
    """The budget at fixed bit-widths as BoTorch's linear inequality on the ratio coordinates x[:d]."""
    const, coef = cost.linear(bits.unsqueeze(0), "size", r_max)  # size <= const - coef @ r
    a = coef[0] * r_max
    return [(torch.arange(d), a / a.max(), float((const[0] - budget_bytes) / a.max()))]


def feasible(x):
    r, b = decode(x)
    const, coef = cost.linear(b.unsqueeze(0), "size", r_max)
    return float(const[0] - coef[0] @ r) <= budget_bytes


def random_feasible(n, seed, allowed=choices, tries=200_000):
    """n joint candidates: bit-widths drawn from ``allowed``, uniform ratios, kept where they meet the budget."""
    grid = torch.tensor([choices.index(b) for b in allowed]) / 3
    g, out = torch.Generator().manual_seed(seed), []
    for _ in range(tries):
        x = torch.rand(2 * d, generator=g, dtype=torch.double)
        x[d:] = grid[torch.randint(len(grid), (d,), generator=g)]
        if feasible(x):
            out.append(x)
            if len(out) == n:
                return torch.stack(out)
    raise ValueError(f"found {len(out)} of {n} candidates within the budget in {tries} draws: lower tau")


def evaluate(x):
    r, b = decode(x)
    return objective(Candidate({n: float(v) for n, v in zip(layers, r)}, {n: int(v) for n, v in zip(layers, b)}))


print(f"budget: {budget_bytes / 1024:.1f} KiB ({tau:.2%} of the 2-bit model's {cost.base / 1024:.1f} KiB removed)")

# %% [markdown]
# ## 3. The joint loop, written out
#
# The GP sees both halves of $x$ as coordinates (the bit coordinates only ever take 4 values). Each step: score
# many random feasible candidates with log expected improvement, keep the best three, and for each fix its
# bit-widths and let `optimize_acqf` move its ratios under that bit-vector's linear constraint
# (`fixed_features` holds the bit coordinates); the best of the three is evaluated next.

# %%
n_init = 4


def joint_bo(n=budget, seed=1, allowed=choices):
    """``n`` evaluations: ``n_init`` random feasible candidates (bit-widths from ``allowed``), then guided ones."""
    x = random_feasible(n_init, seed, allowed)
    y = torch.tensor([[evaluate(p)] for p in x], dtype=torch.double)
    for step in range(n - n_init):
        gp = SingleTaskGP(x, y, input_transform=Normalize(2 * d), outcome_transform=Standardize(1))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
        acq = LogExpectedImprovement(gp, best_f=y.max())
        raw = random_feasible(64, 100 + step, allowed)
        with torch.no_grad():
            starts = raw[acq(raw.unsqueeze(1)).topk(3).indices]
        best, best_value = None, -float("inf")
        for start in starts:
            _, bits = decode(start)
            cand, value = optimize_acqf(acq, bounds=torch.stack([torch.zeros(2 * d), torch.ones(2 * d)]).double(),
                                        q=1, num_restarts=1, batch_initial_conditions=start.view(1, 1, -1),
                                        fixed_features={d + j: float(start[d + j]) for j in range(d)},
                                        inequality_constraints=size_constraint(bits))
            cand = cand.detach().view(-1).clamp(0, 1)
            if feasible(cand) and float(value) > best_value:
                best, best_value = cand, float(value)
        best = best if best is not None else starts[0]  # SLSQP left the region: the best feasible start
        x = torch.cat([x, best.unsqueeze(0)])
        y = torch.cat([y, torch.tensor([[evaluate(best)]], dtype=torch.double)])
    return x, y


x_bo, y_bo = joint_bo()
x_rand = random_feasible(budget, 2)
y_rand = torch.tensor([[evaluate(p)] for p in x_rand], dtype=torch.double)
assert all(feasible(p) for p in torch.cat([x_bo, x_rand]))  # nothing over the budget was ever evaluated

# %%
fig, ax = plt.subplots(figsize=(7, 3.6))
steps = torch.arange(1, budget + 1)
ax.plot(steps, y_bo.cummax(0).values, "o-", label="joint BO (best so far)")
ax.plot(steps, y_rand.cummax(0).values, "s--", label="random joint search (best so far)")
ax.axvline(n_init + 0.5, color="gray", lw=0.8)
ax.text(n_init + 0.6, 0.04, "GP-guided from here", fontsize=8, color="gray", transform=ax.get_xaxis_transform())
ax.set_xlabel("evaluations")
ax.set_ylabel("validation top-1 (%)")
ax.legend(loc="lower right")
plt.show()
r, b = decode(x_bo[int(y_bo.argmax())])
pd.DataFrame({"block": [n.replace(".conv1", "") for n in layers], "bits": b.int().tolist(),
              "ratio": r.round(decimals=2).tolist()}).set_index("block").T

# %% [markdown]
# One run of 10 evaluations on 300 images is one noisy draw: notebook 7 compares the settings over the study's
# seeds with 40 evaluations each, and says what two seeds can and cannot decide.
#
# ## Exercises
#
# 1. Add a budget on bit-operations: at most 80 % of the 2-bit model's BOPs. Write `bops_constraint(bits)` like
#    `size_constraint` (`cost.linear(..., "bops", r_max)`; the reference is `cost.bops_base`) and pass both to
#    `optimize_acqf`. Which blocks lose bits first?
# 2. Which layers dominate the BOPs of the 2-bit model? Use `cost.terms` (each layer's MACs and bit-widths).
#
# Each solution is a file beside this lesson, not run by *Run All*: to see one, type `%load solutions/T4_1.py` in a
# new cell and run that cell twice (the first run loads the code, the second runs it).

# %%
if solutions:  # the tests set this: every solution runs here, after the lesson
    for path in sorted(Path("solutions").glob("T4_*.py")):
        print(f"--- {path.name}")
        exec(compile(path.read_text(), str(path), "exec"))

# %% [markdown]
# ## Summary
#
# - At mixed precision, a layer's size is bits x weights and its cost bits x bits x MACs; both shrink with the
#   fraction of filters kept, so for fixed bit-widths the budget is linear in the ratios.
# - A joint search is a discrete choice (bit-widths) wrapped around the paper's continuous one (ratios under a
#   linear constraint): score, fix the bits of the best starts, optimize the ratios.
# - An any-precision model makes every candidate an evaluation, not a training run.
#
# **Prerequisites**: lessons T1 and T2. **Next**: notebook 7, the joint search against its baselines in the study.
#
# **References**: S. Zhou et al., *DoReFa-Net*, arXiv:1606.06160, 2016; K. Wang et al., *HAQ: Hardware-aware
# automated quantization with mixed precision*, CVPR 2019; H. Yu et al., *Any-Precision Deep Neural Networks*,
# AAAI 2021; A. Bulat and G. Tzimiropoulos, *Bit-Mixer*, ICCV 2021; M. van Baalen et al., *Bayesian Bits*,
# NeurIPS 2020 (BOPs as a cost); M. Balandat et al., *BoTorch*, NeurIPS 2020.
