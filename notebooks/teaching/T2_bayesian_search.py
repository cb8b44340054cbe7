# %% [markdown]
# # Lesson 2. Searching per-layer pruning ratios with Bayesian optimization
#
# Paper: L. Guerra, B. Zhuang, I. Reid, T. Drummond, *Automatic Pruning for Quantized Neural Networks*,
# arXiv:2002.00523 (2020). **The paper's full text is not reproduced here**: its abstract says that Bayesian
# optimization picks each layer's pruning ratio; how is this package's choice (README, *Choices where the paper is
# silent*).
#
# **You will learn to**
# 1. state the search as a constrained optimization problem with an analytic, linear size constraint;
# 2. write the BO loop yourself with BoTorch: a Gaussian-process surrogate, an expected-improvement acquisition,
#    `optimize_acqf` under the linear constraint;
# 3. compare it with random search under the same budget, and read the hypervolume of an accuracy/size front.
#
# Runs live in about a minute on 2 CPU cores on the committed BNN checkpoint (no study needed). `qrepro.search`
# holds the production version of this loop (journaled, resumable, Pareto mode); here every step is visible.

# %% tags=["parameters"]
smoke = False  # True: read the tiny smoke study's checkpoints (CI, or a loaded laptop)
results = None  # results folder; None: results/
budget = 12  # evaluations per method (BO: 4 quasi-random, then 8 guided)
solutions = False  # True: run every exercise's solution at the end (the tests do; Run All and make teach do not)

# %%
from qrepro.notebooks import check_parameters

smoke, results = check_parameters(smoke=smoke, results=results)  # papermill's values, validated
if not isinstance(budget, int) or budget < 6:
    raise ValueError(f"budget must be an integer of at least 6, got {budget!r}")

# %%
# %matplotlib inline
import warnings

import matplotlib.pyplot as plt
import torch
from botorch.acquisition import LogExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms import Normalize, Standardize
from botorch.optim import optimize_acqf
from gpytorch.mlls import ExactMarginalLogLikelihood
from pathlib import Path

from qrepro import report, study
from qrepro.gp import hypervolume
from qrepro.objective import PruneObjective
from qrepro.prune import prunable_layers
from qrepro.size import SizeModel

warnings.filterwarnings("ignore", module="botorch|linear_operator|gpytorch")
_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. The problem
#
# One ratio $r_l \in [0, r_{\max}]$ per prunable layer (the first convolution of each of the 9 basic blocks of
# ResNet-20). Validation accuracy $f(r)$ after pruning and BatchNorm re-estimation is expensive and noisy; the size
# is not: removing one filter of layer $l$ removes a fixed $b_l$ bytes (its codes, its BatchNorm channel and the
# matching inputs of the next convolution), so with $N_l$ filters
#
# $$ \text{size}(r) \approx S_0 - \sum_l b_l N_l\, r_l . $$
#
# The paper-style problem removes at least a fraction $\tau$ of the size (26.12 % in the paper):
#
# $$ \max_{r \in [0, r_{\max}]^L} f(r) \quad \text{s.t.} \quad \sum_l b_l N_l\, r_l \ \ge\ \tau\, S_0 ,$$
#
# a **linear inequality** that `optimize_acqf` takes as it is: no candidate that breaks the size target is ever
# evaluated, and the GP never has to learn the constraint.

# %%
bnn, _ = report.load_base("bnn", smoke, results)
splits = study.load_study_data(smoke)
layers = prunable_layers(bnn)
size = SizeModel.from_model(bnn, layers)
objective = PruneObjective(bnn, splits, bn_batches=3, val_images=300 if not smoke else 64)
tau, r_max = 0.2612, 0.9
w = size.weights(r_max) * r_max  # bytes removed per unit of x, where r = r_max * x and x lies in the unit cube
constraint = [(torch.arange(len(layers)), w / w.max(), float(tau * size.base / w.max()))]
bounds = torch.stack([torch.zeros(len(layers)), torch.ones(len(layers))]).double()
print(f"{len(layers)} layers; unpruned {size.base / 1024:.1f} KiB; target: remove {tau:.2%}")


def evaluate(x):
    """Validation top-1 of the model pruned at r = r_max * x."""
    return objective({n: float(v) * r_max for n, v in zip(layers, x)})


def feasible_random(n, seed):
    """n uniform draws of the unit cube that meet the size constraint (rejection sampling)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    while sum(len(o) for o in out) < n:
        x = torch.rand(512, len(layers), generator=g, dtype=torch.double)
        out.append(x[x @ constraint[0][1] >= constraint[0][2]])
    return torch.cat(out)[:n]


# %% [markdown]
# ## 2. The surrogate and the acquisition
#
# A Gaussian process puts a prior on $f$: any finite set of values is jointly Gaussian,
# $ f \sim \mathcal{GP}\big(m, k\big) $, with BoTorch's default kernel for `SingleTaskGP` over the (normalized)
# ratios: in this BoTorch version an RBF kernel with one length scale per ratio (the cell after the loop prints
# the fitted one, and checks that this sentence is still true). Conditioned on the
# evaluations $\mathcal{D} = \{(x_i, y_i)\}$, the posterior at $x$ is Gaussian with mean $\mu(x)$ and standard
# deviation $\sigma(x)$. **Expected improvement** over the best value so far $y^*$,
#
# $$ \mathrm{EI}(x) = \mathbb{E}\big[\max(f(x) - y^*, 0)\big] = \sigma(x)\,\big(z\,\Phi(z) + \varphi(z)\big),
# \qquad z = \frac{\mu(x) - y^*}{\sigma(x)} , $$
#
# trades off a high mean (exploitation) against a high uncertainty (exploration). BoTorch's `LogExpectedImprovement`
# optimizes its logarithm, which stays well-behaved where EI is tiny.
#
# ## 3. The loop, written out

# %%
n_init = 4


def bo_loop(acquisition, n=budget, seed=1):
    """``n`` evaluations: ``n_init`` feasible random points, then one ``acquisition(gp, y)`` maximizer per step."""
    x = feasible_random(n_init, seed=seed)  # a random start (qrepro.search uses a scrambled Sobol sequence)
    y = torch.tensor([[evaluate(p)] for p in x], dtype=torch.double)
    for step in range(n - n_init):
        gp = SingleTaskGP(x, y, input_transform=Normalize(len(layers)), outcome_transform=Standardize(1))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
        x_next, _ = optimize_acqf(acquisition(gp, y), bounds=bounds, q=1, num_restarts=4, raw_samples=128,
                                  inequality_constraints=constraint,
                                  batch_initial_conditions=feasible_random(4, seed=100 + step).unsqueeze(1))
        x = torch.cat([x, x_next.detach().clamp(0, 1)])
        y = torch.cat([y, torch.tensor([[evaluate(x[-1])]], dtype=torch.double)])
    return x, y, gp


x_bo, y_bo, gp = bo_loop(lambda gp, y: LogExpectedImprovement(gp, best_f=y.max()))
x_rand = feasible_random(budget, seed=2)
y_rand = torch.tensor([[evaluate(x)] for x in x_rand], dtype=torch.double)
kernel = gp.covar_module
print("the fitted kernel:", kernel)
assert "RBF" in type(kernel).__name__, "the kernel is no longer RBF: update section 2's sentence"

# %%
fig, ax = plt.subplots(figsize=(7, 3.6))
steps = torch.arange(1, budget + 1)
ax.plot(steps, y_bo.cummax(0).values, "o-", label="BO (best so far)")
ax.plot(steps, y_rand.cummax(0).values, "s--", label="random search (best so far)")
ax.axvline(n_init + 0.5, color="gray", lw=0.8)
ax.text(n_init + 0.6, 0.04, "GP-guided from here", fontsize=8, color="gray", transform=ax.get_xaxis_transform())
ax.set_xlabel("evaluations")
ax.set_ylabel("validation top-1 (%)")
ax.set_title(f"BNN ResNet-20, at least {tau:.2%} of the size removed")
ax.legend(loc="lower right")
plt.show()
best = x_bo[int(y_bo.argmax())] * r_max
print("best BO ratios:", {n: round(float(r), 2) for n, r in zip(layers, best)})
print(f"size removed: {1 - size.exact_size(best.tolist()) / size.base:.2%} (target {tau:.2%})")

# %%
preset = report.study_settings(smoke)["search"]  # the study whose checkpoints this lesson reads
print(f"One run of {budget} evaluations on {objective.val_images} validation images is noisy: the study's searches "
      f"run {preset['budget']} evaluations each, with seeds {preset['seeds']}, and notebook 4 reports their mean and "
      "spread.")

# %% [markdown]
# ## 4. Two objectives: the hypervolume
#
# Without a fixed target, every evaluation is a point (accuracy, fraction of size removed); the **Pareto front**
# is the set of points no other point beats on both. Its **hypervolume** with respect to a reference point $r$,
#
# $$ \mathrm{HV}(P) = \lambda\Big(\bigcup_{p \in P} [r_1, p_1] \times [r_2, p_2]\Big) , $$
#
# the area the front dominates, grows whenever the front improves: it is what `qrepro.search`'s Pareto mode
# (qLogNEHVI) maximizes. The reference point here is $(0\,\%, 0)$, as in notebook 5: the worst value of both
# objectives, so every evaluation counts and the hypervolumes of two runs compare.

# %%
pts = torch.cat([torch.cat([y_bo, y_rand]), torch.cat([x_bo, x_rand]) @ (size.weights(r_max) * r_max).unsqueeze(1)
                 / size.base], 1)
ref = torch.zeros(2, dtype=torch.double)  # top-1 0 %, pruned fraction 0: notebook 5's reference point
print(f"hypervolume of all {len(pts)} evaluations: {hypervolume(pts, ref):.3f} (accuracy points x size fraction)")

# %% [markdown]
# ## Exercises
#
# 1. Replace `LogExpectedImprovement` by an upper confidence bound, `UpperConfidenceBound(gp, beta=4.0)`
#    (`bo_loop` takes the acquisition). Does the search explore more or less? Plot both best-so-far curves.
# 2. Raise the target `tau` to 0.5 and rerun both methods. How far apart are BO and random search now, and why does
#    the feasible region matter for random search?
# 3. Print the GP's posterior mean and standard deviation at the best point found and at a random feasible point.
#    Which one would EI pick, and why?
#
# Each solution is a file beside this lesson, not run by *Run All*: to see one, type `%load solutions/T2_1.py` in a
# new cell and run that cell twice (the first run loads the code, the second runs it).

# %%
if solutions:  # the tests set this: every solution runs here, after the lesson
    for path in sorted(Path("solutions").glob("T2_*.py")):
        print(f"--- {path.name}")
        exec(compile(path.read_text(), str(path), "exec"))

# %% [markdown]
# ## Summary
#
# - The size is a known, linear function of the ratios: it belongs in the optimizer's constraint, not in the model.
# - A GP surrogate and expected improvement choose the next ratios from every evaluation so far; random search
#   does not learn, and the feasible region it samples shrinks as the target grows.
# - One search on a few hundred images is one noisy draw: compare methods over seeds, as the study does.
#
# **Prerequisites**: lesson T1; Gaussian distributions. **Next**: lesson T3 measures what pruning saves in time.
#
# **References**: J. Močkus, *On Bayesian methods for seeking the extremum*, 1975, and D. R. Jones et al.,
# *Efficient global optimization of expensive black-box functions*, 1998 (expected improvement); S. Ament et al.,
# *Unexpected improvements to expected improvement*, NeurIPS 2023 (LogEI); C. E. Rasmussen and C. K. I. Williams,
# *Gaussian Processes for Machine Learning*, 2006; E. Zitzler and L. Thiele, 1998, and S. Daulton et al., NeurIPS
# 2020-2021 (hypervolume, qNEHVI); M. Balandat et al., *BoTorch*, NeurIPS 2020; L. Guerra et al., arXiv:2002.00523.
