"""qrepro.acquisition.PosteriorLogEI against BoTorch's LogExpectedImprovement (an independent
implementation of the same formula, through GPyTorch's posterior): values and gradients, on the
fitted GP and on the GP conditioned on pending points at their posterior mean (Kriging believer)."""
import warnings

import pytest
import torch
from botorch.acquisition.analytic import LogExpectedImprovement

from qrepro.acquisition import PosteriorLogEI
from qrepro.gp import fit_gp
from qrepro.search import SearchConfig, SearchError

D = 12


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, D, generator=g, dtype=torch.double)
    y = -((x - 0.3) ** 2).sum(1, keepdim=True) + 0.01 * torch.randn(40, 1, generator=g, dtype=torch.double)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gp = fit_gp(x, y)
    points = torch.rand(16, 1, D, generator=g, dtype=torch.double)
    return gp, x, points


def value_and_grad(acq, points):
    X = points.clone().requires_grad_(True)
    v = acq(X)
    (g,) = torch.autograd.grad(v.sum(), X)
    return v.detach(), g


def test_log_ei_equals_botorch_value_and_gradient(data):
    gp, x, points = data
    best_f = gp.posterior(x).mean.max().detach()
    ref_v, ref_g = value_and_grad(LogExpectedImprovement(gp, best_f=best_f), points)
    v, g = value_and_grad(PosteriorLogEI(gp, x), points)
    torch.testing.assert_close(v, ref_v, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(g, ref_g, rtol=1e-7, atol=1e-9)


def test_pending_points_are_kriging_believers(data):
    gp, x, points = data
    pending = torch.rand(3, D, generator=torch.Generator().manual_seed(1), dtype=torch.double)
    best_f = gp.posterior(x).mean.max().detach()
    believer = gp.condition_on_observations(pending, gp.posterior(pending).mean.detach())
    ref_v, ref_g = value_and_grad(LogExpectedImprovement(believer, best_f=best_f), points)
    v, g = value_and_grad(PosteriorLogEI(gp, x, pending), points)
    torch.testing.assert_close(v, ref_v, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(g, ref_g, rtol=1e-7, atol=1e-9)
    # ... and the acquisition turns away from a pending point: at it, less than without it
    at = pending[:1].unsqueeze(0)
    assert PosteriorLogEI(gp, x, pending)(at) < PosteriorLogEI(gp, x)(at)


@pytest.mark.parametrize("kw, message", [
    (dict(acquisition="ei"), "unknown acquisition 'ei'; accepted values: logei, qlognei"),
    (dict(acquisition="logei", q=2), "acquisition 'logei' proposes one candidate at a time, but q=2"),
    (dict(acquisition="logei", mode="pareto"), "applies to method 'bo' in constrained mode only"),
    (dict(acquisition="qlognei", method="random"), "applies to method 'bo' in constrained mode only"),
])
def test_acquisition_config_errors_are_one_line(kw, message):
    with pytest.raises(SearchError, match=message) as err:
        SearchConfig(layers=["a", "b"], **kw)
    assert "\n" not in str(err.value)


def test_acquisition_defaults_to_logei_one_at_a_time_and_qlognei_for_batches():
    assert SearchConfig(layers=["a"]).acquisition == "logei"
    assert SearchConfig(layers=["a"], q=3).acquisition == "qlognei"
    assert SearchConfig(layers=["a"], mode="pareto").acquisition is None
    assert SearchConfig(layers=["a"], method="random").acquisition is None
    assert "acquisition" not in SearchConfig(layers=["a"], method="random").to_dict()  # its key as before
