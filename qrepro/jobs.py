"""The study's jobs as typed records: one search or one fine-tuned final model, and its artifact id.

A job's :meth:`to_dict` is what its artifact's key holds (``criterion`` only where the job names a
compared criterion: without one, it prunes with the study's own, ``search.criterion``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .config import ANY_PRECISION, JOINT_SETTINGS, QUANT_KINDS, StudyConfig


class _Job:
    """What search and final jobs share: the criterion they prune with, and the dict their key holds."""

    criterion: str | None

    def criterion_in(self, cfg: StudyConfig) -> str:
        return self.criterion or cfg.search.criterion

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not (k == "criterion" and v is None)}


@dataclass(frozen=True)
class SearchJob(_Job):
    """One search: a quantized base model, a mode and method, a size target (pareto: 0) and a seed."""

    model: str
    mode: str
    target: float
    method: str
    seed: int
    criterion: str | None = None  # a compared criterion (``search.compare_criteria``); None: the study's

    @property
    def id(self) -> str:
        crit = f"-{self.criterion}" if self.criterion else ""
        return f"search/{self.model}-{self.mode}-{self.method}{crit}-t{self.target}-s{self.seed}"


@dataclass(frozen=True)
class FinalJob(_Job):
    """One final model: the best configuration of a method's searches, fine-tuned with one seed."""

    model: str
    method: str
    target: float
    seed: int
    criterion: str | None = None

    @property
    def id(self) -> str:
        crit = f"-{self.criterion}" if self.criterion else ""
        return f"final/{self.model}-{self.method}{crit}-t{self.target}-s{self.seed}"

    def searches(self, cfg: StudyConfig) -> list[SearchJob]:
        """The searches it picks its ratios from: every seed's (uniform: its one search)."""
        seeds = cfg.search.seeds if self.method != "uniform" else [0]
        return [SearchJob(self.model, "constrained", self.target, self.method, s, self.criterion) for s in seeds]


def search_jobs(cfg: StudyConfig) -> list[SearchJob]:
    s = cfg.search
    jobs = []
    for kind in QUANT_KINDS:
        for target in s.targets.get(kind, []):
            for method in s.methods:
                jobs += [SearchJob(kind, "constrained", target, method, seed)
                         for seed in (s.seeds if method != "uniform" else [0])]
        for crit in s.compare_criteria:
            jobs += [SearchJob(kind, "constrained", s.compare_target, "bo", seed, crit) for seed in s.seeds]
    jobs.append(SearchJob(s.pareto_model, "pareto", 0.0, "bo", 0))
    return jobs


@dataclass(frozen=True)
class JointJob:
    """One search of the joint stage: a setting of ``JOINT_SETTINGS`` on the any-precision model, a size target and
    a seed."""

    setting: str
    target: float
    seed: int

    @property
    def id(self) -> str:
        return f"joint/{self.setting}-t{self.target}-s{self.seed}"

    def search_fields(self, cfg: StudyConfig) -> dict:
        """The :class:`~qrepro.search.SearchConfig` fields this job sets (its key holds them)."""
        space, method, choices = JOINT_SETTINGS[self.setting]
        j = cfg.joint
        return {"space": space, "method": method, "bit_choices": choices or j.bit_choices, "target": self.target,
                "bops_target": j.bops_target, "budget": j.budget, "n_init": j.n_init, "r_max": cfg.search.r_max,
                "seed": self.seed}

    def to_dict(self) -> dict:
        return {"model": ANY_PRECISION, **asdict(self)}


def joint_jobs(cfg: StudyConfig) -> list[JointJob]:
    j = cfg.joint
    return [JointJob(name, t, s) for name in j.settings for t in j.targets for s in j.seeds] if j else []


def final_jobs(cfg: StudyConfig) -> list[FinalJob]:
    f = cfg.final
    jobs = [FinalJob(k, m, t, s) for k in QUANT_KINDS for t in f.targets.get(k, []) for m in ("bo", "uniform")
            for s in f.seeds]
    return jobs + [FinalJob(k, "bo", cfg.search.compare_target, s, c)
                   for k in QUANT_KINDS for c in cfg.search.compare_criteria for s in f.seeds]


def gp_slice_job(cfg: StudyConfig) -> SearchJob:
    """The search whose GP the posterior slice shows: the first quantized model's first BO search."""
    kind = QUANT_KINDS[0]
    return SearchJob(kind, "constrained", cfg.search.targets[kind][0], "bo", cfg.search.seeds[0])
