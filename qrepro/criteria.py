"""Filter-selection criteria, one contract, registered by name.

A criterion receives a :class:`LayerView` (a layer's filters as quantized codes and as
latent weights, and the BatchNorm that follows) and how many filters to keep, and returns
a :class:`Selection`: the sorted indices to keep and, where it has them, one score per
filter (higher = more important).  ``select_filters(view, n_keep, "redundancy")`` looks
the name up in ``CRITERIA``.

``VARIANTS`` names a criterion with fixed options (``"redundancy-gm"``): the one vocabulary of
configs, presets and the command line.

``"redundancy"`` is this package's reading of the paper's "redundant low-precision
filters" (METHOD.md): filters whose quantized codes repeat each other add little, so
the closest pair among the kept filters loses its less important member until the
layer is small enough.  Baselines: ``"l1"`` (Li et al. 2017, latent weights), ``"fpgm"``
(He et al. 2019, geometric median on the quantized codes), ``"bn_scale"`` (network
slimming, Liu et al. 2017, ``|gamma|``) and ``"random"``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch

from .errors import BadInput

DISTANCES = ("hamming", "l2", "cosine")


class CriterionError(BadInput):
    """A bad criterion name or option."""


TIE_BREAKS = ("gamma", "geometric_median")


@dataclass
class LayerView:
    """What a criterion sees of one layer (or one coupled group of layers).

    ``codes``: ``(N, D)`` quantized filters with scales divided out ({-1, +1} for binary,
    integer levels for k-bit, latent weights for full precision); ``latent``: ``(N, D)``
    latent full-precision weights; ``gamma``/``beta``: ``(N,)`` of the following BatchNorm.
    """

    name: str
    codes: torch.Tensor
    latent: torch.Tensor
    kind: str  # "binary", "levels" or "float"
    gamma: torch.Tensor | None = None
    beta: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return self.codes.shape[0]


@dataclass
class Selection:
    keep: torch.Tensor  # (n_keep,) sorted int64
    scores: torch.Tensor | None = None  # (N,) higher = more important


Criterion = Callable[..., Selection]
CRITERIA: dict[str, Criterion] = {}
# the names configs, presets and the CLI use: a registered criterion with fixed options
VARIANTS: dict[str, tuple[str, dict]] = {}


def register(name: str, **options):
    """Register a criterion under ``name`` (also a variant of that name with ``options``)."""
    def deco(fn):
        CRITERIA[name] = fn
        register_variant(name, name, **options)
        return fn
    return deco


def register_variant(name: str, criterion: str, **options):
    """Name ``criterion`` with fixed ``options`` (``"redundancy-gm"``: redundancy, geometric-median tie-break)."""
    check_options(criterion, options)
    VARIANTS[name] = (criterion, options)


def variant(name: str) -> tuple[str, dict]:
    """``(criterion, options)`` of a variant name; one clear error for an unknown one."""
    if name not in VARIANTS:
        raise CriterionError(f"unknown criterion {name!r}; accepted values: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def criterion_options(criterion: str) -> list[str]:
    """The options a registered criterion accepts (its keyword parameters)."""
    if criterion not in CRITERIA:
        raise CriterionError(f"unknown criterion {criterion!r}; registered: {', '.join(CRITERIA)}")
    return list(inspect.signature(CRITERIA[criterion]).parameters)[2:]


def check_options(criterion: str, options: dict):
    """Reject options ``criterion`` does not take (a typo must not run the default silently)."""
    accepted = criterion_options(criterion)
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise CriterionError(f"criterion {criterion!r} has no option {', '.join(map(repr, unknown))}; its options: "
                             f"{', '.join(accepted) or 'none'}")


def _top(scores: torch.Tensor, n_keep: int) -> Selection:
    """Keep the ``n_keep`` highest scores (ties: lower index first)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return Selection(order[:n_keep].sort().values, scores)


# --------------------------------------------------------------------------- distances
def pairwise_distances(codes: torch.Tensor, kind: str, distance: str | None = None) -> torch.Tensor:
    """``(N, N)`` distances between filter codes ``(N, D)``.

    Binary codes: Hamming distance, from ``<c_i, c_j> = D - 2 hamming`` (exact in float64).
    k-bit levels: Euclidean (``"l2"``) or ``1 - cosine`` of the centred levels (``"cosine"``).
    """
    distance = distance or ("hamming" if kind == "binary" else "l2")
    if distance not in DISTANCES:
        raise CriterionError(f"unknown distance {distance!r}; accepted values: {', '.join(DISTANCES)}")
    c = codes.double()
    if distance == "hamming":
        if kind != "binary":
            raise CriterionError("the Hamming distance needs binary {-1, +1} codes; use 'l2' or 'cosine'")
        return (c.shape[1] - c @ c.T) / 2
    if distance == "l2":
        sq = (c * c).sum(1)
        return (sq[:, None] + sq[None, :] - 2 * c @ c.T).clamp_min(0).sqrt()
    centred = c - c.mean(1, keepdim=True) if kind == "float" else c - (c.max() + c.min()) / 2
    unit = centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (1 - unit @ unit.T).clamp_min(0)


# --------------------------------------------------------------------------- criteria
@register("redundancy", tie_break="gamma")
def redundancy(view: LayerView, n_keep: int, distance: str | None = None, tie_break: str = "gamma") -> Selection:
    """Greedy removal of the less important member of the closest pair of kept filters.

    Tie-break ``"gamma"``: the member whose following BatchNorm has the smaller ``|gamma|``
    goes (falls back to ``"geometric_median"`` where no BatchNorm follows);
    ``"geometric_median"``: the member with the smaller sum of distances to all kept
    filters goes.  Exact duplicates (distance 0) therefore go first.
    Scores: removal order (first removed = 0), kept filters above all removed ones.
    """
    if tie_break not in TIE_BREAKS:
        raise CriterionError(f"unknown tie_break {tie_break!r}; accepted values: {', '.join(TIE_BREAKS)}")
    n = view.n
    d = pairwise_distances(view.codes, view.kind, distance)
    use_gamma = tie_break == "gamma" and view.gamma is not None
    importance = view.gamma.detach().abs().double() if use_gamma else None
    alive = torch.ones(n, dtype=torch.bool, device=d.device)
    sum_dist = d.sum(1)  # sum of distances to the kept filters, updated on each removal
    masked = d.clone()
    masked.fill_diagonal_(float("inf"))
    scores = torch.full((n,), float(n), dtype=torch.float64, device=d.device)
    for step in range(n - n_keep):
        flat = int(torch.argmin(masked))
        i, j = divmod(flat, n)
        key = importance if use_gamma else sum_dist
        ki, kj = float(key[i]), float(key[j])
        victim = i if (ki, -i) < (kj, -j) else j  # the less important goes; on a tie the higher index
        alive[victim] = False
        scores[victim] = step
        masked[victim, :] = float("inf")
        masked[:, victim] = float("inf")
        sum_dist -= d[:, victim]
    keep = alive.nonzero().flatten()
    if use_gamma:
        scores[keep] = n + importance[keep]
    return Selection(keep, scores)


@register("l1")
def l1_norm(view: LayerView, n_keep: int) -> Selection:
    """Keep the filters whose latent full-precision weights have the largest L1 norm (Li et al. 2017)."""
    return _top(view.latent.abs().sum(1).double(), n_keep)


@register("fpgm")
def fpgm(view: LayerView, n_keep: int, distance: str | None = None) -> Selection:
    """Filter pruning via geometric median (He et al. 2019), on the quantized codes: the
    filters with the smallest sum of distances to all others are nearest the geometric
    median, hence the most replaceable, and go."""
    return _top(pairwise_distances(view.codes, view.kind, distance).sum(1), n_keep)


@register("bn_scale")
def bn_scale(view: LayerView, n_keep: int) -> Selection:
    """Keep the channels with the largest ``|gamma|`` of the following BatchNorm (network slimming)."""
    if view.gamma is None:
        raise CriterionError(f"criterion 'bn_scale' needs a BatchNorm after layer {view.name}")
    return _top(view.gamma.detach().abs().double(), n_keep)


@register("random")
def random_selection(view: LayerView, n_keep: int, seed: int = 0) -> Selection:
    """A seeded uniformly random subset (the seed is mixed with the layer name)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + sum(map(ord, view.name)))
    scores = torch.rand(view.n, generator=g, dtype=torch.float64)
    return _top(scores, n_keep)


def select_filters(view: LayerView, n_keep: int, criterion: str = "redundancy", **options) -> Selection:
    """Indices of the ``n_keep`` filters of ``view`` that ``criterion`` keeps."""
    check_options(criterion, options)
    if not 1 <= n_keep <= view.n:
        raise CriterionError(f"n_keep must be in [1, {view.n}] for layer {view.name}, got {n_keep}")
    if n_keep == view.n:
        return Selection(torch.arange(view.n))
    sel = CRITERIA[criterion](view, n_keep, **options)
    assert len(sel.keep) == n_keep
    return sel


register_variant("redundancy-gm", "redundancy", tie_break="geometric_median")
