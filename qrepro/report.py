"""What the notebooks read, and how they save figures: the reading half of the package.

Every read goes through the study's artifact graph, which refuses a missing, stale or corrupt
artifact: :func:`read_table`, :func:`ablation_frame`, :func:`search_frame`, :func:`gp_slice`,
:func:`base_models`, :func:`load_base`, :func:`read_json`, :func:`joint_frame`, :func:`trial_frame`,
:func:`claims`.  Nothing here trains, prunes or searches: what a study in progress shows (:func:`pilot_pairs`,
:func:`claims`) applies the tables' own functions to the artifacts built so far.  Figures are written as PNG and
PDF under ``results/figures``.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from . import tables
from .config import BASE_KINDS, QUANT_KINDS, load_preset  # noqa: F401  (the notebooks' vocabulary)
from .gp import hypervolume, pareto_front  # noqa: F401
from .jobs import joint_jobs
from .paths import figures_dir
from .size import DEFAULT_CONVENTION, MB  # noqa: F401
from .study import open_study, study_graph
from .tables import LABELS


def save_figure(fig, name: str, root=None) -> None:
    """Write ``fig`` as ``figures/<name>.png`` and ``.pdf`` (byte-stable); returns nothing, so a
    notebook cell ending with it shows the figure, not a list of paths."""
    folder = figures_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / f"{name}.png", dpi=150, bbox_inches="tight")
    fig.savefig(folder / f"{name}.pdf", bbox_inches="tight", metadata={"CreationDate": None})


def training_curves(bases: dict) -> pd.DataFrame:
    rows = []
    for kind, (_, payload) in bases.items():
        for h in payload["metrics"].get("history", []):
            rows.append({"model": LABELS[kind], **{k: v for k, v in h.items() if not isinstance(v, dict)}})
    return pd.DataFrame(rows)


def convergence(df: pd.DataFrame, budget: int) -> pd.DataFrame:
    """Best feasible value among candidates ``0 .. n - 1`` (index order: the journal's ``best_so_far``
    follows the order evaluations finished in, which concurrent workers make vary), per model,
    target, method and seed; the uniform baseline (one evaluation) is carried flat over the budget."""
    rows = []
    for (model, target, method, criterion, seed), g in df[df["mode"] == "constrained"].groupby(
            ["model", "target", "method", "criterion", "seed"]):
        g = g.sort_values("index")
        best = g["value"].where(g["feasible"].astype(bool)).cummax().ffill().tolist()
        best += [best[-1]] * (budget - len(best))
        rows += [{"model": model, "target": target, "method": method, "criterion": criterion, "seed": seed,
                  "evaluations": n + 1, "best_val_top1": b} for n, b in enumerate(best[:budget])]
    return pd.DataFrame(rows)


def read_table(name: str, preset=False, root=None) -> pd.DataFrame:
    """A table the study wrote (``tables/<name>.csv``), digest checked."""
    return pd.read_csv(study_graph(preset, root).resolve(f"table/{name}"))


def load_base(kind: str, preset=False, root=None):
    """``(model, payload)`` of a base model."""
    return open_study(preset, root).base(kind)


def base_models(preset=False, root=None, kinds=BASE_KINDS) -> dict:
    """``{kind: (model, payload)}`` of the cached base models."""
    s = open_study(preset, root)
    return {k: s.base(k) for k in kinds}


def read_json(id: str, preset=False, root=None):
    return json.loads(study_graph(preset, root).resolve(id).read_text())


def ablation_frame(preset=False, root=None) -> pd.DataFrame:
    return pd.read_csv(study_graph(preset, root).resolve("ablation"))


def sensitivity_frame(preset=False, root=None) -> pd.DataFrame:
    return pd.read_csv(study_graph(preset, root).resolve("sensitivity"))


def search_frame(preset=False, root=None) -> pd.DataFrame:
    """Every evaluation of every search job, long format (one row per evaluation)."""
    return tables.search_frame(open_study(preset, root))


def joint_frame(preset=False, root=None) -> pd.DataFrame:
    """Every evaluation of every joint-stage search, long format, with bit-widths and BOPs."""
    return tables.joint_frame(open_study(preset, root))


def gp_slice(preset=False, root=None) -> dict:
    """The cached GP posterior slice: ``grid``, ``mean``, ``std`` (arrays), ``seen``, ``best``, ``layers``."""
    d = json.loads(study_graph(preset, root).resolve("gp_slice").read_text())
    return {k: np.asarray(v) if k in ("grid", "mean", "std", "seen", "best") else v for k, v in d.items()}


def study_settings(preset=False) -> dict:
    """The study's settings as a dict (what the notebooks show beside their figures)."""
    return load_preset(preset).to_dict()


def study_progress(preset=False, root=None) -> pd.DataFrame:
    """Per stage, how many artifacts are usable (fresh or legacy) and how many are not yet (missing, stale, in
    progress or corrupt): what a study that spans several runs has left."""
    graph = study_graph(preset, root)
    rows = [{"stage": graph[s.id].stage, "usable": s.usable} for s in graph.report()]
    df = pd.DataFrame(rows)
    out = df.groupby("stage", sort=False)["usable"].agg(artifacts="size", usable="sum").reset_index()
    return out.assign(left=out["artifacts"] - out["usable"])


class _Built:
    """A study whose graph lists only the artifacts built so far: what a study in progress can already show."""

    def __init__(self, graph):
        self.graph, self._graph = self, graph

    def ids(self, stage=None) -> list[str]:
        return [i for i in self._graph.ids(stage) if self._graph.done(i)]

    def resolve(self, id: str):
        return self._graph.resolve(id)


def trial_frame(preset=False, root=None, built_only: bool = False) -> pd.DataFrame:
    """Every trial of Study v2 (:func:`qrepro.tables.trial_frame`); ``built_only``: those built so far."""
    study = open_study(preset, root)
    return tables.trial_frame(_Built(study.graph) if built_only else study)


def claims(preset=False, root=None) -> tuple[pd.DataFrame, bool]:
    """Study v2's claims with ``seeds_for_0.3`` (:func:`seeds_for_claims`), and whether they are final: the
    ``trial_claims`` table once the study wrote it; before, the same computation
    (:func:`qrepro.tables.trial_claims`) over the trials built so far, with (e) once every joint search is built:
    provisional intervals whose seed counts say how far the run has come."""
    study = open_study(preset, root)
    graph = study.graph
    if graph.done("table/trial_claims"):
        df, final = pd.read_csv(graph.resolve("table/trial_claims")), True
    else:
        trials = tables.trial_frame(_Built(graph))
        joint_built = study.config.joint and all(graph.done(job.id) for job in joint_jobs(study.config))
        joint = tables.joint_frame(study) if joint_built else None
        df, final = (tables.trial_claims(trials, joint) if len(trials) else pd.DataFrame()), False
    return df.assign(**{"seeds_for_0.3": seeds_for_claims(df)}), final


def pilot_pairs(preset=False, root=None) -> pd.DataFrame:
    """Question (a)'s pairs built so far, one row per model, target, fine-tuning length and seed: the BO pick's and
    the uniform ratio's test top-1 and their difference (what the seed count is chosen from, not a claim)."""
    df = trial_frame(preset, root, built_only=True)
    return bo_uniform_pairs(df[df["rank"].isna()] if not df.empty else df, "test_top1")


def bo_uniform_pairs(df: pd.DataFrame, value: str) -> pd.DataFrame:
    """The study's own criterion's BO rows of ``df`` beside its uniform rows of the same model, target, fine-tuning
    length and seed: columns ``bo``, ``uniform`` (from ``value``) and ``bo_minus_uniform``."""
    index = ["model", "target", "epochs", "seed"]
    if not df.empty:
        df = df[df.criterion.isna() & df.method.isin(["bo", "uniform"])]
    if df.empty:
        return pd.DataFrame(columns=[*index, "bo", "uniform", "bo_minus_uniform"])
    wide = df.pivot_table(index=index, columns="method", values=value).reindex(columns=["bo", "uniform"]).dropna()
    return wide.assign(bo_minus_uniform=wide["bo"] - wide["uniform"]).reset_index().rename_axis(columns=None)


def pooled_spread(pairs: pd.DataFrame) -> tuple[float, int]:
    """The standard deviation of ``bo_minus_uniform`` pooled over cells (model, target, epochs), and its degrees
    of freedom (nan, 0 while no cell has two seeds)."""
    cells = pairs.groupby(["model", "target", "epochs"]).bo_minus_uniform
    dof = int((cells.count() - 1).sum())
    if dof == 0:
        return float("nan"), 0
    return float(np.sqrt((cells.var(ddof=1).fillna(0) * (cells.count() - 1)).sum() / dof)), dof


def seeds_for_claims(claims: pd.DataFrame, half_width: float = 0.3) -> pd.Series:
    """For each t-interval row of a claims table ((a)-(e)), the seeds a 95 % half-width of ``half_width`` needs at
    the spread its own seeds show (recovered from its half-width); None where it already has them or is (f)."""
    def needed(r):
        if r.question == "f" or not r.seeds >= 2 or np.isnan(r.half_width):
            return None
        spread = r.half_width * np.sqrt(r.seeds) / student_t.ppf(0.975, r.seeds - 1)
        return seeds_needed(spread, half_width) if r.half_width > half_width else None
    return pd.Series([needed(r) for r in claims.itertuples()], index=claims.index, dtype="object")


def seeds_needed(spread: float, half_width: float = 0.3, most: int = 200) -> int | None:
    """The fewest paired seeds whose 95 % t-interval has a half-width of at most ``half_width``, for a paired
    difference of standard deviation ``spread`` (None: more than ``most``)."""
    for n in range(2, most + 1):
        if student_t.ppf(0.975, n - 1) * spread / np.sqrt(n) <= half_width:
            return n
    return None
