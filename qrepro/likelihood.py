"""The loss that fits the search's GP, in closed form: ``mll_closure(mll)``.

:func:`qrepro.gp.fit_gp` maximizes the exact marginal likelihood of a ``SingleTaskGP``
(BoTorch's defaults: an RBF kernel with one lengthscale per dimension, a constant mean,
homoskedastic noise, LogNormal priors on the lengthscales and the noise) with
``fit_gpytorch_mll``'s L-BFGS-B.  Its default loss closure runs the GP's modules and
``linear_operator``'s lazy tensors at every step, nearly all of it overhead around a small
Cholesky factorization and its backward (benchmarks/HISTORY.md has the times).  This module
computes the same loss, ``-(log N(y; c, K + s I) + log priors) / n`` with
``K_ij = exp(-|(x_i - x_j) / l|^2 / 2)``, from the same parameter tensors, as a dozen tensor
operations and the data term's gradients in closed form.  Its value and
gradients equal the default closure's to float rounding (``tests/test_likelihood.py``), and
``fit_gpytorch_mll`` runs the same optimizer, bounds, options and fallbacks with it
(``fit_gpytorch_mll(mll, closure=mll_closure(mll))``).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from botorch.models import SingleTaskGP
from botorch.optim.utils import get_parameters_and_bounds
from gpytorch.kernels import RBFKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.means import ConstantMean
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import LogNormalPrior


def trainable_parameters(mll: ExactMarginalLogLikelihood) -> dict[str, torch.nn.Parameter]:
    """The parameters ``fit_gpytorch_mll`` optimizes, by name, in the order ``get_parameters_and_bounds``
    lists them: those that require a gradient."""
    return {k: p for k, p in get_parameters_and_bounds(mll)[0].items() if p.requires_grad}


def mll_closure(mll: ExactMarginalLogLikelihood) -> Callable[[], tuple[torch.Tensor, tuple[torch.Tensor, ...]]]:
    """A loss closure for ``fit_gpytorch_mll_scipy``: returns the negative marginal log likelihood per
    observation and its gradients with respect to the trainable parameters, in the order in which
    ``get_parameters_and_bounds`` lists them (what the optimizer reads and writes).  ``mll`` must be
    a ``SingleTaskGP``'s with an RBF kernel without an output scale, a constant mean and a Gaussian
    likelihood, as :func:`qrepro.gp.fit_gp` builds it; anything else raises ``TypeError``."""
    gp = mll.model
    if not (isinstance(gp, SingleTaskGP) and type(gp.covar_module) is RBFKernel and gp.covar_module.ard_num_dims
            and type(gp.mean_module) is ConstantMean and type(gp.likelihood) is GaussianLikelihood
            and not list(gp.added_loss_terms()) and gp.train_targets.dim() == 1):
        raise TypeError("mll_closure computes the loss of a SingleTaskGP with an ARD RBF kernel, a constant mean "
                        "and a Gaussian likelihood only; fit other models with fit_gpytorch_mll's default closure")
    parameters = list(trainable_parameters(mll).values())
    x = gp.transform_inputs(X=gp.train_inputs[0]).detach()
    y = gp.train_targets.detach()
    n = y.shape[0]
    diff2 = (x.unsqueeze(-2) - x.unsqueeze(-3)).square()  # (n, n, d): (x_ik - x_jk)^2
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    priors = [(get, module, _log_density(prior)) for _, module, prior, get, _ in gp.named_priors()]
    log_2pi = math.log(2 * math.pi)

    def closure(**kwargs) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        # the hyperparameters from the raw parameters (through their constraints) and the log priors: a
        # small autograd graph; the data term and its gradients in closed form, without one
        ls, noise, const = gp.covar_module.lengthscale, gp.likelihood.noise, gp.mean_module.constant
        log_prior = sum(log_density(get(module)).sum() for get, module, log_density in priors)
        with torch.no_grad():
            inv_ls2 = ls.reciprocal().square().view(-1)
            rbf = torch.exp(-0.5 * (diff2 @ inv_ls2))
            chol = torch.linalg.cholesky(rbf + noise * eye)
            r = (y - const).unsqueeze(-1)
            alpha = torch.cholesky_solve(r, chol)
            log_lik = -0.5 * (r * alpha).sum() - chol.diagonal().log().sum() - 0.5 * n * log_2pi
            # d log_lik / d cov = (alpha alpha^T - cov^-1) / 2; d cov_ij / d l_k = rbf_ij (x_ik - x_jk)^2 / l_k^3
            w = 0.5 * (alpha @ alpha.transpose(-1, -2) - torch.cholesky_inverse(chol))
            g_ls = torch.einsum("ij,ijk->k", w * rbf, diff2) * inv_ls2 / ls.view(-1)
            g_noise, g_const = w.diagonal().sum(), alpha.sum()
        surrogate = log_prior + (ls.view(-1) * g_ls).sum() + (noise * g_noise).sum() + const * g_const
        grads = torch.autograd.grad(-surrogate / n, parameters)
        return (-(log_lik + log_prior.detach()) / n), grads

    return closure


def _log_density(prior) -> Callable[[torch.Tensor], torch.Tensor]:
    """``prior.log_prob``; a LogNormal prior's in closed form (GPyTorch's runs a transformed distribution's
    machinery, a tenth of a fit's time): ``-log v - log s - log(2 pi) / 2 - (log v - m)^2 / (2 s^2)``."""
    if type(prior) is not LogNormalPrior:
        return prior.log_prob
    m, var, log_s = prior.loc, prior.scale.square(), prior.scale.log()
    half_log_2pi = math.log(math.sqrt(2 * math.pi))

    def log_density(v: torch.Tensor) -> torch.Tensor:  # torch's Normal.log_prob of log v, in its order, less log v
        log_v = v.log()
        return -(log_v - m).square() / (2 * var) - log_s - half_log_2pi - log_v

    return log_density
