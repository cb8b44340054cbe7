"""The search's default acquisition function, in closed form: log expected improvement of the
fitted GP's posterior, with the candidates still being evaluated taken into account as
*Kriging believers* (observed at their posterior mean).

Why not BoTorch's own: ``LogExpectedImprovement`` on the ``SingleTaskGP`` computes the same
number, but every call walks GPyTorch's lazy-tensor machinery, many times the cost of the algebra
itself, and SLSQP calls it 50-150 times per proposal (benchmarks/HISTORY.md has the times).
Here the GP's hyperparameters, training inputs and the Cholesky factor are read once per
proposal and each call is a handful of tensor operations.  ``tests/test_acquisition.py`` checks values and gradients against
BoTorch's ``LogExpectedImprovement`` (on the GP, and on the GP conditioned on the pending
points' posterior means) to float64 precision.

Scope: the GP :func:`qrepro.gp.fit_gp` builds (``SingleTaskGP`` with an RBF kernel with one
lengthscale per input, a constant mean, homoskedastic Gaussian noise, ``Normalize`` inputs and
``Standardize`` outcomes); anything else raises.
"""
from __future__ import annotations

import math

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.analytic import _log_ei_helper
from botorch.models.transforms import Normalize, Standardize
from gpytorch.kernels import RBFKernel
from gpytorch.means import ConstantMean

from .errors import BadInput

MIN_VARIANCE = 1e-12  # posterior variances below this are clamped (as BoTorch's analytic functions do)


class PosteriorLogEI(AcquisitionFunction):
    """``log E[max(f(x) - best_f, 0)]`` under the posterior of ``gp`` (one point per q-batch),
    ``best_f`` the highest posterior mean at the observed inputs ``x_observed``; ``pending``
    ``(p, d)``: inputs being evaluated, added to the GP's data with their posterior mean as
    observation (the Kriging believer), so the acquisition turns away from them."""

    def __init__(self, gp, x_observed: torch.Tensor, pending: torch.Tensor | None = None):
        super().__init__(model=gp)
        if not isinstance(gp.covar_module, RBFKernel) or not isinstance(gp.mean_module, ConstantMean) \
                or not isinstance(gp.input_transform, Normalize) or not isinstance(gp.outcome_transform, Standardize):
            raise BadInput("PosteriorLogEI needs the GP of qrepro.gp.fit_gp (RBF kernel, constant mean, Normalize "
                           "inputs, Standardize outcomes); use BoTorch's LogExpectedImprovement for other models")
        with torch.no_grad():
            self.lengthscale = gp.covar_module.lengthscale.detach().reshape(-1)
            self.noise = float(gp.likelihood.noise.detach().reshape(-1)[0])
            self.constant = float(gp.mean_module.constant.detach().reshape(-1)[0])
            self.log_stdv = math.log(float(gp.outcome_transform.stdvs.reshape(-1)[0]))
            self.normalize = gp.input_transform
            train = gp.train_inputs[0].detach()  # already normalized; targets already standardized
            targets = gp.train_targets.detach().reshape(-1)
            self._condition(train, targets)
            self.best_f = float(self._mean(self._kernel(self.normalize.transform(x_observed), train)).max())
            if pending is not None and len(pending):
                xp = self.normalize.transform(pending.to(train))
                self._condition(torch.cat([train, xp]), torch.cat([targets, self._mean(self._kernel(xp, train))]))

    def _kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = a / self.lengthscale, b / self.lengthscale
        sq = (a * a).sum(-1, keepdim=True) - 2 * a @ b.transpose(-1, -2) + (b * b).sum(-1).unsqueeze(-2)
        return torch.exp(-0.5 * sq.clamp_min(0))

    def _condition(self, train: torch.Tensor, targets: torch.Tensor):
        """Cache the Cholesky factor of ``K + noise I`` and ``K^-1 (y - m)`` for ``(train, targets)``."""
        k = self._kernel(train, train) + self.noise * torch.eye(len(train), dtype=train.dtype, device=train.device)
        self.train = train
        self.chol = torch.linalg.cholesky(k)
        self.alpha = torch.cholesky_solve((targets - self.constant).unsqueeze(-1), self.chol).squeeze(-1)

    def _mean(self, kx: torch.Tensor) -> torch.Tensor:
        """Posterior mean from the kernel row ``kx = k(x, train)`` of the points."""
        return self.constant + kx @ self.alpha

    def posterior_mean_var(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance of the latent function at ``x`` ``(..., d)``, standardized units."""
        xn = self.normalize.transform(x)
        kx = self._kernel(xn, self.train)  # (..., n)
        mean = self._mean(kx)
        flat = kx.reshape(-1, kx.shape[-1])
        v = torch.linalg.solve_triangular(self.chol, flat.T, upper=False)  # (n, points): one solve for all
        return mean, (1.0 - (v * v).sum(0).reshape(kx.shape[:-1])).clamp_min(MIN_VARIANCE)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``X``: ``(b, 1, d)`` -> ``(b,)`` log expected improvement (in the outcome's units)."""
        if X.shape[-2] != 1:
            raise BadInput(f"PosteriorLogEI scores one point per batch (q=1); got q={X.shape[-2]}")
        mean, var = self.posterior_mean_var(X.squeeze(-2))
        sigma = var.sqrt()
        return _log_ei_helper((mean - self.best_f) / sigma) + sigma.log() + self.log_stdv
