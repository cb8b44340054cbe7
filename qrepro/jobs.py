"""The study's jobs as typed records: one search, one fine-tuned final model or one trial, and its artifact id.

A job's :meth:`to_dict` is what its artifact's key holds (``criterion`` only where the job names a
compared criterion: without one, it prunes with the study's own, ``search.criterion``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .config import ANY_PRECISION, JOINT_SETTINGS, QUANT_KINDS, StudyConfig
from .validation import ConfigError


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
        space, method, choices, mode = JOINT_SETTINGS[self.setting]
        j = cfg.joint
        front = {"mode": mode, "ref_accuracy": 0.0} if mode == "pareto" else {}  # the reference point as make_search's
        return {"space": space, "method": method, "bit_choices": choices or j.bit_choices, "target": self.target,
                "bops_target": j.bops_target, "budget": j.budget, "n_init": j.n_init, "r_max": cfg.search.r_max,
                "seed": self.seed, **front}

    def to_dict(self) -> dict:
        return {"model": ANY_PRECISION, **asdict(self)}


def joint_jobs(cfg: StudyConfig) -> list[JointJob]:
    j = cfg.joint
    if not j:
        return []
    front = [name for name in j.settings if JOINT_SETTINGS[name][3] == "pareto"]
    return [JointJob(name, t, s) for name in j.settings if name not in front for t in j.targets for s in j.seeds] + \
        [JointJob(name, 0.0, s) for name in front for s in j.seeds]


def final_jobs(cfg: StudyConfig) -> list[FinalJob]:
    f = cfg.final
    jobs = [FinalJob(k, m, t, s) for k in QUANT_KINDS for t in f.targets.get(k, []) for m in ("bo", "uniform")
            for s in f.seeds]
    return jobs + [FinalJob(k, "bo", cfg.search.compare_target, s, c) for k in QUANT_KINDS if f.targets.get(k)
                   for c in cfg.search.compare_criteria for s in f.seeds]


def gp_slice_job(cfg: StudyConfig) -> SearchJob:
    """The search whose GP the posterior slice shows: the first quantized model's first BO search."""
    kind = QUANT_KINDS[0]
    return SearchJob(kind, "constrained", cfg.search.targets[kind][0], "bo", cfg.search.seeds[0])


@dataclass(frozen=True)
class TrialJob(_Job):
    """One arm of Study v2's paired trials (:class:`~qrepro.config.TrialSettings`): a model pruned by ``method``
    (at ``target``; ``rank``: the candidate at that position of its search's ranking, best first), fine-tuned for
    ``epochs`` with seed ``seed``, the seed of its search too.  The unpruned model has no target."""

    model: str
    method: str
    target: float | None
    epochs: float
    seed: int
    criterion: str | None = None
    rank: int | None = None

    @property
    def id(self) -> str:
        if self.method == "unpruned":
            return f"trial/{self.model}-unpruned-e{self.epochs}-s{self.seed}"
        crit = f"-{self.criterion}" if self.criterion else ""
        what = f"rank{self.rank}" if self.rank is not None else self.method
        return f"trial/{self.model}-{what}{crit}-t{self.target}-e{self.epochs}-s{self.seed}"

    def search(self) -> SearchJob | None:
        """The search its configuration comes from: its own method's (uniform: BO's, whose pick's size it meets)."""
        if self.method == "unpruned":
            return None
        return SearchJob(self.model, "constrained", self.target, "random" if self.method == "random" else "bo",
                         self.seed, self.criterion)


def trial_jobs(cfg: StudyConfig) -> list[TrialJob]:
    """Every trial of the preset, each once; a trial whose search the preset does not run is refused."""
    t = cfg.trials
    if t is None:
        return []
    jobs = {}
    for arms in t.arms:
        for model in arms.models:
            for epochs in arms.epochs:
                for seed in arms.seeds:
                    for method in arms.methods:
                        if method == "unpruned":
                            job = TrialJob(model, method, None, float(epochs), seed)
                            jobs[job.id] = job
                            continue
                        for target in arms.targets:
                            for crit in (arms.criteria or [None]) if method == "bo" else [None]:
                                job = TrialJob(model, method, target, float(epochs), seed,
                                               None if crit == cfg.search.criterion else crit)
                                jobs[job.id] = job
    if t.ranked:
        epochs = float(t.arms[0].epochs[0])
        for k in range(t.ranked):
            job = TrialJob(t.ranked_model, "bo", t.ranked_target, epochs, t.ranked_seed, rank=k)
            jobs[job.id] = job
    searches = {j.id for j in search_jobs(cfg)}
    missing = sorted({j.search().id for j in jobs.values() if j.search() and j.search().id not in searches})
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ConfigError(f"trials need {len(missing)} searches the preset's [search] does not run "
                          f"({', '.join(missing[:3])}{more}); add their targets, methods, seeds or compare_criteria "
                          "there")
    return list(jobs.values())
