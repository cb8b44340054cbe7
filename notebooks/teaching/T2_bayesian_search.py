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
# 3. watch the surrogate and the acquisition function as the loop proceeds;
# 4. compare it with random search over paired trials, with an interval, and read the hypervolume of an
#    accuracy/size front.
#
# Runs live in about a minute on 2 CPU cores on the committed BNN checkpoint (no study needed); on a loaded laptop
# set `trials = 1` in the parameters cell (about a third of the time, and no interval). `qrepro.search` holds the
# production version of this loop (journaled, resumable, Pareto mode); here every step is visible.

# %% tags=["parameters"]
smoke = False  # True: read the tiny smoke study's checkpoints (CI, or a loaded laptop)
results = None  # results folder; None: results/
budget = 10  # evaluations per method and trial (BO: 4 random, then 6 guided)
trials = 3  # paired BO / random-search runs (seeds 0, 1, ...); 1 on a loaded laptop (no interval then)
solutions = False  # True: run every exercise's solution at the end (the tests do; Run All and make teach do not)

# %%
from qrepro.notebooks import check_parameters

smoke, results = check_parameters(smoke=smoke, results=results)  # papermill's values, validated
if not isinstance(budget, int) or budget < 6:
    raise ValueError(f"budget must be an integer of at least 6, got {budget!r}")
if not isinstance(trials, int) or trials < 1:
    raise ValueError(f"trials must be a positive integer, got {trials!r}")

# %%
# %matplotlib inline
import warnings

import matplotlib.pyplot as plt
import torch
from scipy import stats
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
# **Noisy observations.** Each $y_i$ is an accuracy on a few hundred images: a binomial draw whose standard
# deviation is $100\sqrt{p(1-p)/n}$ points, about 3 points here (printed after the loop, beside the noise the GP
# fits). Taking $y^* = \max_i y_i$ would set the bar at the luckiest draw, which no candidate can be expected to
# clear, and EI would then chase uncertainty alone. So $y^*$ is the highest posterior *mean* at the evaluated points,
# the plug-in that `qrepro.search` uses (`qrepro.acquisition.PosteriorLogEI`); BoTorch's `qLogNoisyExpectedImprovement`
# integrates over the noise instead, exactly but at several times the cost per step.
#
# ## 3. The loop, written out

# %%
n_init = 4


def noisy_ei(gp, x):
    """LogEI over the best posterior mean at the evaluated points ``x`` (not the best noisy value)."""
    with torch.no_grad():
        best = gp.posterior(x).mean.max()
    return LogExpectedImprovement(gp, best_f=best)


def bo_loop(acquisition, n=budget, seed=0):
    """``n`` evaluations: ``n_init`` feasible random points, then one ``acquisition(gp, x)`` maximizer per step;
    returns the points, their values and the GP fitted before each guided step."""
    x = feasible_random(n_init, seed=seed)  # a random start (qrepro.search uses a scrambled Sobol sequence)
    y = torch.tensor([[evaluate(p)] for p in x], dtype=torch.double)
    gps = []
    for step in range(n - n_init):
        gp = SingleTaskGP(x, y, input_transform=Normalize(len(layers)), outcome_transform=Standardize(1))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
        x_next, _ = optimize_acqf(acquisition(gp, x), bounds=bounds, q=1, num_restarts=4, raw_samples=128,
                                  inequality_constraints=constraint,
                                  batch_initial_conditions=feasible_random(4, seed=1000 * seed + 100 + step)
                                  .unsqueeze(1))
        x = torch.cat([x, x_next.detach().clamp(0, 1)])
        y = torch.cat([y, torch.tensor([[evaluate(x[-1])]], dtype=torch.double)])
        gps.append(gp)
    return x, y, gps


def random_search(seed, start):
    """``budget`` feasible random points; the first ``n_init`` are BO's (``start``: their values), so a pair of
    runs differs only in how the remaining points are chosen."""
    x = feasible_random(budget, seed=seed)
    return x, torch.cat([start, torch.tensor([[evaluate(p)] for p in x[n_init:]], dtype=torch.double)])


x_bo, y_bo, gps = bo_loop(noisy_ei, seed=0)
x_rand, y_rand = random_search(0, y_bo[:n_init])
assert torch.equal(x_rand[:n_init], x_bo[:n_init])  # the pair shares its random start
gp = gps[-1]
kernel = gp.covar_module
print("the fitted kernel:", kernel)
assert "RBF" in type(kernel).__name__, "the kernel is no longer RBF: update section 2's sentence"
p = float(y_bo.mean()) / 100
noise_sd = float(gp.likelihood.noise.detach().sqrt() * gp.outcome_transform.stdvs)
print(f"binomial noise at {p:.0%} on {objective.val_images} images: {100 * (p * (1 - p) / objective.val_images) ** 0.5:.1f}"
      f" points; the GP's fitted noise: {noise_sd:.1f} points")
best = x_bo[int(y_bo.argmax())] * r_max
print("best BO ratios:", {n: round(float(r), 2) for n, r in zip(layers, best)})
print(f"size removed: {1 - size.exact_size(best.tolist()) / size.base:.2%} (target {tau:.2%})")

# %% [markdown]
# ### Watching the surrogate
#
# The GP lives in 9 dimensions; a picture shows one line through it. Below, the line runs along the layer whose
# fitted length scale is shortest (the ratio the GP finds most consequential), through the evaluated point with the
# highest posterior mean, the other ratios held there. Top: the posterior mean, its 95 % band and three samples of
# $f$; the evaluations are drawn at their value of that ratio, though they lie off the line. Bottom: log EI along
# the same line, its maximum on the line (triangle), and the ratio the next candidate took (dotted; its other
# ratios differ, so it need not sit at the triangle). Grey: ratios on this line that remove too little of the size.

# %%
most = int(gp.covar_module.lengthscale.argmin())
line = torch.linspace(0, 1, 201, dtype=torch.double)
shown = sorted({0, len(gps) // 2, len(gps) - 1})
fig, axes = plt.subplots(2, len(shown), figsize=(4.2 * len(shown), 5.6), sharex=True, sharey="row", squeeze=False)
for col, k in enumerate(shown):
    g, seen = gps[k], x_bo[: n_init + k]
    with torch.no_grad():
        centre = seen[int(g.posterior(seen).mean.argmax())]
        xs = centre.repeat(len(line), 1)
        xs[:, most] = line
        post = g.posterior(xs)
        mean, sd = post.mean.flatten(), post.variance.sqrt().flatten()
        base = torch.randn(3, *post.base_sample_shape, generator=torch.Generator().manual_seed(k), dtype=torch.double)
        samples = post.rsample_from_base_samples(torch.Size([3]), base)  # fixed draws: the same picture every run
        log_ei = noisy_ei(g, seen)(xs.unsqueeze(1))
    infeasible = (xs @ constraint[0][1] < constraint[0][2]).numpy()
    r = (line * r_max).numpy()
    top, bottom = axes[0, col], axes[1, col]
    top.fill_between(r, mean - 1.96 * sd, mean + 1.96 * sd, alpha=0.25, label="95 % band")
    top.plot(r, mean, label="posterior mean")
    for i, s_ in enumerate(samples):
        top.plot(r, s_.flatten(), lw=0.7, color="C2", label="samples of f" if i == 0 else None)
    top.scatter(seen[:, most] * r_max, y_bo[: n_init + k], s=14, color="k", zorder=3, label="evaluations (off the line)")
    bottom.plot(r, log_ei)
    bottom.plot(r[int(log_ei.argmax())], float(log_ei.max()), "v", color="C3", label="maximum on the line")
    bottom.axvline(float(x_bo[n_init + k, most]) * r_max, ls=":", color="C3", label="next candidate's ratio")
    for ax in (top, bottom):
        ax.fill_between(r, 0, 1, where=infeasible, color="0.85", transform=ax.get_xaxis_transform(), lw=0)
    top.set_title(f"after {n_init + k} evaluations")
    bottom.set_xlabel(f"pruning ratio of {layers[most]}")
axes[0, 0].set_ylabel("validation top-1 (%)")
axes[1, 0].set_ylabel("log EI")
axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
axes[1, -1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### BO against random search, paired by seed
#
# One run is one noisy draw. Each trial runs both methods from the same random start (seed $s$), so their
# difference is what the guided steps add; the 95 % interval on the mean difference uses Student's $t$ over the
# trials.

# %%
best_bo, best_rand = [float(y_bo.max())], [float(y_rand.max())]
curves = [(y_bo.cummax(0).values.flatten(), y_rand.cummax(0).values.flatten())]
for seed in range(1, trials):
    _, y_b, _ = bo_loop(noisy_ei, seed=seed)
    _, y_r = random_search(seed, y_b[:n_init])
    best_bo.append(float(y_b.max()))
    best_rand.append(float(y_r.max()))
    curves.append((y_b.cummax(0).values.flatten(), y_r.cummax(0).values.flatten()))
diff = torch.tensor(best_bo) - torch.tensor(best_rand)
fig, ax = plt.subplots(figsize=(7, 3.6))
steps = torch.arange(1, budget + 1)
for i, (b, r) in enumerate(curves):
    ax.plot(steps, b, "o-", color="C0", alpha=0.35, ms=3, label="BO, each trial" if i == 0 else None)
    ax.plot(steps, r, "s--", color="C1", alpha=0.35, ms=3, label="random search, each trial" if i == 0 else None)
ax.plot(steps, torch.stack([b for b, _ in curves]).mean(0), "o-", color="C0", lw=2, label="BO, mean")
ax.plot(steps, torch.stack([r for _, r in curves]).mean(0), "s--", color="C1", lw=2, label="random search, mean")
ax.axvline(n_init + 0.5, color="gray", lw=0.8)
ax.text(n_init + 0.6, 0.04, "GP-guided from here", fontsize=8, color="gray", transform=ax.get_xaxis_transform())
ax.set_xlabel("evaluations")
ax.set_ylabel("best validation top-1 so far (%)")
ax.set_title(f"BNN ResNet-20, at least {tau:.2%} of the size removed, {trials} trial(s)")
ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
fig.tight_layout()
plt.show()
print("best of", budget, "per trial: BO", [round(v, 1) for v in best_bo], "random", [round(v, 1) for v in best_rand])
if trials > 1:
    half = float(stats.t.ppf(0.975, trials - 1) * diff.std() / trials ** 0.5)
    lo, hi = float(diff.mean()) - half, float(diff.mean()) + half
    verdict = "BO ahead" if lo > 0 else "random search ahead" if hi < 0 else "the interval holds zero: these trials cannot tell them apart"
    print(f"BO - random: {float(diff.mean()):+.1f} points, 95 % interval [{lo:+.1f}, {hi:+.1f}] over {trials} "
          f"paired trials: {verdict}")
else:
    print(f"BO - random: {float(diff.mean()):+.1f} points in one trial (no interval: set trials >= 2)")
settings = report.study_settings(smoke)  # the study whose checkpoints this lesson reads
print(f"The study's searches run {settings['search']['budget']} evaluations each on "
      f"{settings['evaluation']['val_images']} validation images, with seeds {settings['search']['seeds']}; "
      "notebook 4 reports their mean and spread.")

# %% [markdown]
# ## 4. Two objectives: the hypervolume
#
# Without a fixed target, every evaluation is a point (accuracy, fraction of size removed); the **Pareto front**
# is the set of points no other point beats on both. Its **hypervolume** with respect to a reference point $r$,
#
# $$ \mathrm{HV}(P) = \lambda\Big(\bigcup_{p \in P} [r_1, p_1] \times [r_2, p_2]\Big) , $$
#
# the area the front dominates, grows whenever the front improves: it is what `qrepro.search`'s Pareto mode
# (qLogNEHVI) maximizes.
#
# **The reference point.** Every hypervolume this package *reports* (here, in notebook 5 and in the Pareto journals)
# uses $r = (0\,\%, 0)$, the worst value of both objectives: it is fixed, so every evaluation counts and two runs'
# hypervolumes compare. The search's *acquisition* (`qrepro.gp.ref_point`) measures improvement from just below the
# lowest accuracy observed instead, where the front is: from $(0\,\%, 0)$ nearly all of the area would be accuracies
# no one wants, and qLogNEHVI would hardly tell candidates apart (docs/choices.md, *Search*).

# %%
pts = torch.cat([torch.cat([y_bo, y_rand]), torch.cat([x_bo, x_rand]) @ (size.weights(r_max) * r_max).unsqueeze(1)
                 / size.base], 1)
ref = torch.zeros(2, dtype=torch.double)  # top-1 0 %, pruned fraction 0: the reported hypervolume's reference
print(f"hypervolume of all {len(pts)} evaluations: {hypervolume(pts, ref):.3f} (accuracy points x size fraction)")

# %% [markdown]
# ## Exercises
#
# 1. Replace `noisy_ei` by an upper confidence bound, `UpperConfidenceBound(gp, beta=4.0)` (`bo_loop` takes the
#    acquisition as a function of the GP and the evaluated points). Does the search explore more or less? Plot both
#    best-so-far curves of trial 0.
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
# - Each evaluation is a noisy draw: EI's bar is the best posterior mean, not the luckiest value, and methods are
#   compared over paired seeds with an interval, as the study does.
#
# **Prerequisites**: lesson T1; Gaussian distributions. **Next**: lesson T3 measures what pruning saves in time.
#
# **References**: J. Močkus, *On Bayesian methods for seeking the extremum*, 1975, and D. R. Jones et al.,
# *Efficient global optimization of expensive black-box functions*, 1998 (expected improvement); S. Ament et al.,
# *Unexpected improvements to expected improvement*, NeurIPS 2023 (LogEI); C. E. Rasmussen and C. K. I. Williams,
# *Gaussian Processes for Machine Learning*, 2006; E. Zitzler and L. Thiele, 1998, and S. Daulton et al., NeurIPS
# 2020-2021 (hypervolume, qNEHVI); M. Balandat et al., *BoTorch*, NeurIPS 2020; L. Guerra et al., arXiv:2002.00523.
