"""The closed-form GP loss (qrepro.likelihood) against BoTorch's default closure, which runs GPyTorch's
modules: the same value and gradients, and a fit that reaches the same marginal likelihood."""
import warnings

import pytest
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.optim.closures import get_loss_closure_with_grads
from gpytorch.kernels import RBFKernel, ScaleKernel
from gpytorch.mlls import ExactMarginalLogLikelihood

from qrepro.gp import fit_gp
from qrepro.likelihood import mll_closure, trainable_parameters


def problem(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.double)
    y = -((x - 0.3) ** 2).sum(1, keepdim=True) + 0.05 * torch.randn(n, 1, generator=g, dtype=torch.double)
    return x, y, g


def train_mll(gp):
    mll = ExactMarginalLogLikelihood(gp.likelihood, gp)
    mll.train()
    return mll


def botorch_closure(mll):
    return get_loss_closure_with_grads(mll, trainable_parameters(mll))


@pytest.mark.parametrize("n, d, seed", [(8, 1, 0), (20, 3, 1), (60, 12, 2)])
def test_loss_and_gradients_equal_botorch_default_closure(n, d, seed):
    x, y, g = problem(n, d, seed)
    gp = fit_gp(x, y, optimize=False)
    for lengthscale, noise in ((torch.rand(1, d, generator=g, dtype=torch.double) + 0.1, 0.05),
                               (torch.full((1, d), 0.025, dtype=torch.double), 1e-4),  # at the lower bounds
                               (torch.full((1, d), 4.0, dtype=torch.double), 0.9)):
        gp.covar_module.lengthscale = lengthscale
        gp.likelihood.noise = torch.tensor([noise], dtype=torch.double)
        gp.mean_module.constant = torch.tensor(0.4, dtype=torch.double)
        mll = train_mll(gp)
        value, grads = mll_closure(mll)()
        ref_value, ref_grads = botorch_closure(mll)()
        assert value.item() == pytest.approx(ref_value.item(), rel=1e-12)
        assert len(grads) == len(ref_grads) == 3
        for a, b in zip(grads, ref_grads):
            assert a.shape == b.shape
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n, d, seed", [(20, 3, 3), (60, 12, 4)])
def test_fit_reaches_the_likelihood_of_the_default_fit(n, d, seed):
    """Both fits stop where L-BFGS-B's tolerance says; the marginal likelihoods they reach agree to
    1e-6 per observation (the hyperparameters, in the flat directions of the likelihood, to about 1e-2)."""
    x, y, _ = problem(n, d, seed)
    ours = fit_gp(x, y)
    theirs = fit_gp(x, y, optimize=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(ExactMarginalLogLikelihood(theirs.likelihood, theirs))
    losses = [botorch_closure(train_mll(gp))()[0].item() for gp in (ours, theirs)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert torch.allclose(ours.covar_module.lengthscale, theirs.covar_module.lengthscale, rtol=5e-2)


def test_other_models_are_refused():
    x, y, _ = problem(10, 2, 5)
    gp = SingleTaskGP(x, y, covar_module=ScaleKernel(RBFKernel(ard_num_dims=2)))
    with pytest.raises(TypeError, match="ARD RBF kernel"):
        mll_closure(ExactMarginalLogLikelihood(gp.likelihood, gp))
