"""A study's settings (``qrepro/presets/<name>.toml``): :class:`StudyConfig`, read by :func:`load_study`.

Every field is checked when the preset is read (:mod:`qrepro.validation`), so a bad value fails
before any stage runs; criteria are named by :data:`qrepro.criteria.VARIANTS`.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from .criteria import VARIANTS
from .data import DATASETS
from .device import check_device_spelling
from .models import resolve_builder
from .objective import EvaluationSettings
from .precision import BIT_CHOICES
from .paths import STUDY_PRESETS_DIR
from .search import METHODS, SearchConfig, SearchError
from .quantize import check_bits
from .train import TrainConfig
from .validation import ConfigError, check_names, from_mapping, read_config_file

# --------------------------------------------------------------------------- study presets
BASE_KINDS = ("fp", "bnn", "dorefa")
QUANT_KINDS = ("bnn", "dorefa")
ANY_PRECISION = "anyprec"  # the base model the joint search prunes: DoReFa trained at per-layer random bit-widths
# the joint stage's searches, all on the any-precision model: name -> (space, method, bit choices (None: the
# study's `joint.bit_choices`), mode).  The constrained ones run at each size budget: "1bit-bo" / "2bit-bo" are the
# paper's setting (one precision, BO over ratios), "bits-bo" the bit-widths alone (HAQ's question, answered with
# BO); "joint-pareto" searches the accuracy / size / BOPs front with qLogNEHVI, once per seed, with no budget
JOINT_SETTINGS = {"joint-bo": ("joint", "bo", None, "constrained"),
                  "joint-random": ("joint", "random", None, "constrained"),
                  "bits-bo": ("bits", "bo", None, "constrained"),
                  "2bit-bo": ("joint", "bo", [2], "constrained"),
                  "1bit-bo": ("joint", "bo", [1], "constrained"),
                  "joint-pareto": ("joint", "bo", None, "pareto")}


def _check_targets(targets: dict, what: str):
    check_names(targets, QUANT_KINDS, what)
    for kind, ts in targets.items():
        for t in ts:
            if not 0 < t < 1:
                raise ValueError(f"{what}.{kind}: a size target is the fraction of the size removed, in (0, 1); got {t}")


def check_scheduler(scheduler: str | None, workers: int | None):
    """A Dask scheduler setting: None, ``"local"`` or an address such as ``tcp://host:8786``."""
    if scheduler is not None and scheduler != "local" and "://" not in scheduler:
        raise ValueError(f"scheduler: {scheduler!r} is neither 'local' nor an address like tcp://host:8786")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1 (or left out), got {workers}")
    if workers is not None and scheduler != "local":
        raise ValueError("workers sizes the local Dask cluster: give it with scheduler = 'local' (a running "
                         "cluster has the workers it was started with)")


@dataclass
class AblationSettings:
    criteria: list[str] = field(default_factory=lambda: list(VARIANTS))
    ratios: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    random_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    finetune_ratio: float = 0.5
    finetune_steps: int = 60
    finetune_lr: float = 1e-4

    def __post_init__(self):
        check_names(self.criteria, list(VARIANTS), "criteria")
        if not self.ratios or not all(0 <= r < 1 for r in self.ratios + [self.finetune_ratio]):
            raise ValueError(f"ratios must be in [0, 1), got {self.ratios} and finetune_ratio {self.finetune_ratio}")
        if self.finetune_steps < 0 or not self.finetune_lr > 0:
            raise ValueError("finetune_steps must be >= 0 and finetune_lr > 0")


@dataclass
class SearchSettings:
    """The study's searches: which (targets, methods, seeds, criteria) and with what budget.  The fields a
    single search has too (``budget``, ``n_init``, ``q``, ``r_max``) are :class:`~qrepro.search.SearchConfig`'s:
    the same defaults, checked by it."""

    targets: dict[str, list[float]] = field(default_factory=lambda: {k: [0.2612, 0.5] for k in QUANT_KINDS})
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budget: int = SearchConfig.budget
    n_init: int = SearchConfig.n_init
    q: int = SearchConfig.q
    r_max: float = SearchConfig.r_max
    criterion: str = "redundancy"
    pareto_budget: int = SearchConfig.budget
    pareto_model: str = "bnn"
    # BO with other criteria at one target (both quantized models, every seed): the criterion under search
    compare_criteria: list[str] = field(default_factory=list)
    compare_target: float = 0.2612
    # where candidates are evaluated (not part of any key): None, in the study's process; "local", a Dask
    # LocalCluster of `workers` processes (default one per GPU, else one per core); "tcp://host:8786", a cluster
    scheduler: str | None = None
    workers: int | None = None

    def __post_init__(self):
        _check_targets(self.targets, "targets")
        check_scheduler(self.scheduler, self.workers)
        check_names(self.methods, METHODS, "methods")
        check_names([self.criterion], list(VARIANTS), "criterion")
        check_names(self.compare_criteria, list(VARIANTS), "compare_criteria")
        if self.criterion in self.compare_criteria or len(set(self.compare_criteria)) < len(self.compare_criteria):
            raise ValueError(f"compare_criteria: list other criteria than criterion ({self.criterion!r}), each once")
        if not 0 < self.compare_target < 1:
            raise ValueError(f"compare_target: a size target in (0, 1), got {self.compare_target}")
        if self.compare_criteria and "bo" not in self.methods:
            raise ValueError("compare_criteria runs BO with other criteria: add 'bo' to methods")
        check_names([self.pareto_model], QUANT_KINDS, "pareto_model")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        try:  # what the searches of these settings would check (the Pareto search is BO)
            SearchConfig(layers=["-"], method="bo" if "bo" in self.methods else "random", budget=self.budget,
                         n_init=self.n_init, q=self.q, r_max=self.r_max)
            SearchConfig(layers=["-"], mode="pareto", budget=self.pareto_budget, n_init=self.n_init, q=self.q,
                         r_max=self.r_max)
        except SearchError as err:
            raise ValueError(f"{err} (pareto_budget: {self.pareto_budget})" if "budget" in str(err) else str(err)) \
                from None


@dataclass
class JointSettings:
    """The joint bit-width / pruning stage (``[joint]``, with ``[base.anyprec]``): every setting of
    ``JOINT_SETTINGS`` at each target (a front: once) and seed, at one evaluation budget.  A target is the
    fraction of the
    any-precision model's size at its own bit-widths (its ``w_bits``) to remove; ``sweep_bits``: the uniform
    bit-widths the any-precision model is evaluated at beside the dedicated models."""

    settings: list[str] = field(default_factory=lambda: list(JOINT_SETTINGS))
    targets: list[float] = field(default_factory=lambda: [0.2612, 0.4])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    budget: int = SearchConfig.budget
    n_init: int = SearchConfig.n_init
    bit_choices: list[int] = field(default_factory=lambda: list(BIT_CHOICES))
    bops_target: float | None = None
    sweep_bits: list[int] = field(default_factory=lambda: list(BIT_CHOICES))

    def __post_init__(self):
        check_names(self.settings, list(JOINT_SETTINGS), "joint.settings")
        if not self.seeds or not self.targets or not all(0 < t < 1 for t in self.targets):
            raise ValueError(f"joint: seeds must be non-empty and targets in (0, 1), got {self.seeds}, {self.targets}")
        try:
            for name in self.settings:
                space, method, choices, mode = JOINT_SETTINGS[name]
                SearchConfig(layers=["-"], space=space, method=method, mode=mode, budget=self.budget,
                             n_init=self.n_init, bit_choices=choices or self.bit_choices, bops_target=self.bops_target)
        except SearchError as err:
            raise ValueError(f"joint: {err}") from None
        for b in self.sweep_bits:
            check_bits(b, "joint.sweep_bits")


@dataclass
class FinalSettings:
    epochs: float = 0.25
    lr: float = 1e-4
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    targets: dict[str, list[float]] = field(default_factory=lambda: {k: [0.2612, 0.5] for k in QUANT_KINDS})
    # the recovery curve: one configuration (the uniform ratio at recovery_target) fine-tuned for each length
    recovery_epochs: list[float] = field(default_factory=list)
    recovery_model: str = "bnn"
    recovery_target: float = 0.5

    def __post_init__(self):
        _check_targets(self.targets, "targets")
        _check_targets({self.recovery_model: [self.recovery_target]}, "recovery")
        if not self.epochs > 0 or not self.lr > 0 or not self.seeds:
            raise ValueError("epochs and lr must be positive and seeds non-empty")
        if not all(e > 0 for e in self.recovery_epochs):
            raise ValueError(f"recovery_epochs must be positive, got {self.recovery_epochs}")


TRIAL_METHODS = ("bo", "random", "uniform", "unpruned")  # uniform: at the BO pick's size; unpruned: the base model


@dataclass
class TrialArms:
    """One set of paired trials (``[[trials.arms]]``): every model x target x method x criterion x fine-tuning
    length x seed.  Seed ``s`` draws search ``s`` and fine-tune ``s``, so arms that differ in one factor pair up."""

    models: list[str] = field(default_factory=lambda: list(QUANT_KINDS))
    targets: list[float] = field(default_factory=lambda: [0.2612])
    methods: list[str] = field(default_factory=lambda: ["bo", "uniform", "unpruned"])
    criteria: list[str] = field(default_factory=list)  # BO with these criteria; empty: the study's search.criterion
    epochs: list[float] = field(default_factory=lambda: [1.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])

    def __post_init__(self):
        check_names(self.models, QUANT_KINDS, "trials.arms.models")
        check_names(self.methods, TRIAL_METHODS, "trials.arms.methods")
        check_names(self.criteria, list(VARIANTS), "trials.arms.criteria")
        if not (self.seeds and self.models and self.methods and self.targets and self.epochs):
            raise ValueError("trials.arms: models, targets, methods, epochs and seeds must each list at least one "
                             "value")
        if not all(0 < t < 1 for t in self.targets) or not all(e > 0 for e in self.epochs):
            raise ValueError(f"trials.arms: targets must be in (0, 1) and epochs positive, got {self.targets}, "
                             f"{self.epochs}")


@dataclass
class TrialSettings:
    """Study v2's paired trials (``[trials]``): each arm's pick is chosen among its search's ``select_top`` best
    candidates on ``selection_images`` validation images no search saw (those after ``evaluation.val_images``;
    None: all the rest), then fine-tuned for ``epochs`` (Adam, cosine, ``lr``) and scored on the test set.
    ``ranked``: for how well the search's objective predicts the fine-tuned accuracy, that many candidates of
    one search (``ranked_model``, ``ranked_target``, seed ``ranked_seed``), evenly spread over its ranking,
    each fine-tuned for the first arm length."""

    lr: float = 1e-3
    select_top: int = 5
    selection_images: int | None = None
    arms: list[TrialArms] = field(default_factory=list)
    ranked: int = 0
    ranked_model: str = "bnn"
    ranked_target: float = 0.5
    ranked_seed: int = 0

    def __post_init__(self):
        if not self.lr > 0 or self.select_top < 1 or self.ranked < 0 or self.ranked == 1:
            raise ValueError("trials: lr must be positive, select_top at least 1 and ranked 0 or at least 2")
        if self.selection_images is not None and self.selection_images < 1:
            raise ValueError(f"trials.selection_images must be at least 1 (or left out), got {self.selection_images}")
        check_names([self.ranked_model], QUANT_KINDS, "trials.ranked_model")
        if not self.arms:
            raise ValueError("trials: list at least one [[trials.arms]] table")


@dataclass
class StudyConfig:
    """A whole study (``qrepro/presets/<name>.toml``).  ``base.<kind>`` holds the
    :class:`~qrepro.train.TrainConfig` fields of each base model; ``arch``, ``dataset``,
    ``val_size`` and ``limit`` are the study's and must not be repeated there."""

    name: str
    dataset: str = "fashion-mnist"
    arch: str = "resnet20"
    val_size: int = 5000
    limit: int | None = None
    image_size: int | None = None  # ImageNet only: the crop size (224 by default)
    loader_workers: int = 2  # ImageNet only: DataLoader worker processes decoding JPEGs (not part of any key)
    # where its tables go in the results folder (their names carry no key): a second study sharing the folder
    # names its own, so neither overwrites the other's
    tables: str = "tables"
    device: str = "auto"  # where it runs: auto, cpu, cuda, cuda:<i> (not part of any key; recorded in each artifact)
    skip_integrity_check: bool = False  # CIFAR-10: read files that fail torchvision's MD5 check (keys hash the content)
    overrides: list[str] = field(default_factory=list)  # the command-line options that changed the preset (for hints)
    base: dict[str, dict] = field(default_factory=dict)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    ablation: AblationSettings = field(default_factory=AblationSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    final: FinalSettings = field(default_factory=FinalSettings)
    joint: JointSettings | None = None  # the joint bit-width / pruning stage; None: none
    trials: TrialSettings | None = None  # Study v2's paired trials; None: none

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name) or ".." in self.name:
            raise ValueError(f"name: {self.name!r} must be a plain name (letters, digits, '_', '-', '.'; no folders), "
                             "it names the study's log file in the results folder")
        check_names([self.dataset], DATASETS, "dataset")
        try:
            resolve_builder(self.arch)  # a registered name or an importable builder
        except ValueError as err:
            raise ValueError(f"arch: {err}") from None
        kinds = self.base_kinds
        if sorted(self.base) != sorted(kinds):
            raise ValueError(f"base must have exactly the tables {', '.join(kinds)}"
                             + (f" (base.{ANY_PRECISION}: with a [joint] section only)" if ANY_PRECISION in self.base
                                or self.joint else "") + f"; got {', '.join(self.base)}")
        if self.joint and not self.base[ANY_PRECISION].get("bit_choices"):
            raise ValueError(f"base.{ANY_PRECISION} must train at random bit-widths: set its bit_choices "
                             "(e.g. [1, 2, 4, 8])")
        parts = Path(self.tables).parts
        if not parts or parts[0] != "tables" or ".." in parts or Path(self.tables).is_absolute():
            raise ValueError(f"tables: {self.tables!r} must be 'tables' or a folder inside it, "
                             f"e.g. 'tables/{self.name}'")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1 (or left out), got {self.limit}")
        if self.loader_workers < 0:
            raise ValueError(f"loader_workers must be 0 or more, got {self.loader_workers}")
        if self.image_size is not None and (self.dataset != "imagenet" or self.image_size < 8):
            raise ValueError("image_size is an ImageNet setting of at least 8 pixels")
        check_device_spelling(self.device)
        for kind, entry in self.base.items():
            clash = [k for k in ("arch", "dataset", "val_size", "limit", "init_from") if k in entry]
            if clash:
                raise ValueError(f"base.{kind}: {', '.join(clash)} are set by the study, not per model")
            from_mapping(TrainConfig, self.base_fields(kind), f"base.{kind}")  # a bad field fails before any stage
        if self.search.compare_criteria:  # compared against the study's criterion's own searches and finals there
            t = self.search.compare_target
            missing = [f"{what}.targets.{k}" for what, targets in (("search", self.search.targets),
                                                                     ("final", self.final.targets))
                       for k in QUANT_KINDS
                       if t not in targets.get(k, []) and (what == "search" or any(targets.values()))]
            if missing:
                raise ValueError(f"search.compare_target {t} must be one of the targets of {', '.join(missing)}")

    @property
    def base_kinds(self) -> tuple[str, ...]:
        """The base models: full precision, BNN and DoReFa, and the any-precision model where the joint stage runs."""
        return BASE_KINDS + ((ANY_PRECISION,) if self.joint else ())

    def base_fields(self, kind: str) -> dict:
        return {"arch": self.arch, "dataset": self.dataset, "val_size": self.val_size, "limit": self.limit,
                **self.base[kind]}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def loader_options(self) -> dict:
        """What the dataset's loader takes beyond the split (ImageNet's crop and decoding processes,
        CIFAR-10's integrity check)."""
        if self.dataset == "imagenet":
            return {"image_size": self.image_size, "loader_workers": self.loader_workers}
        return {"skip_integrity_check": True} if self.dataset == "cifar10" and self.skip_integrity_check else {}

    def skipping_integrity_check(self) -> "StudyConfig":
        """CIFAR-10 files that fail torchvision's MD5 check read anyway (``--skip-integrity-check``)."""
        return dataclasses.replace(self, skip_integrity_check=True,
                                   overrides=[*self.overrides, "--skip-integrity-check"])

    def with_batch_size(self, batch_size: int) -> "StudyConfig":
        """Every base model trained with ``batch_size`` (``study --batch-size``: a small data set)."""
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
        base = {k: {**v, "batch_size": batch_size} for k, v in self.base.items()}
        return dataclasses.replace(self, base=base, overrides=[*self.overrides, "--batch-size", str(batch_size)])

    def shrunk(self, limit: int = 128, image_size: int = 32) -> "StudyConfig":
        """This preset's code paths at a tiny scale, for a smoke run (``--limit``): ``limit``
        training images, every base model trained for one epoch at most (a quarter when
        ``limit`` is small), the ablation on two criteria at one ratio, searches of 4
        evaluations at the first target and seed, ImageNet crops of ``image_size``.  ``limit``
        is at least 128, one batch of the study's loaders."""
        if limit < 128:
            raise ConfigError(f"--limit must be at least 128 (one training batch of the study), got {limit}")
        base = {k: {**v, "epochs": min(float(v.get("epochs", 1)), 1.0), "warmup_epochs": 0.0,
                    "batch_size": min(int(v.get("batch_size", 128)), 32)} for k, v in self.base.items()}
        first = {k: v[:1] for k, v in self.search.targets.items()}
        return dataclasses.replace(
            self, name=f"{self.name}-limit{limit}", limit=limit, overrides=[*self.overrides, "--limit", str(limit)], val_size=min(self.val_size, max(limit // 2, 16)),
            image_size=image_size if self.dataset == "imagenet" else None, loader_workers=0, base=base,
            # of the limit // 10 validation images, the first half at most for the searches, the rest for the trials
            evaluation=EvaluationSettings(bn_batches=1, val_images=min(self.evaluation.val_images or 64, 64,
                                                                        max(limit // 20, 4))),
            ablation=dataclasses.replace(self.ablation, criteria=self.ablation.criteria[:2], ratios=[0.5],
                                         random_seeds=[0], finetune_steps=2),
            search=dataclasses.replace(self.search, targets=first, seeds=self.search.seeds[:1], budget=4, n_init=2,
                                       pareto_budget=4),
            final=dataclasses.replace(self.final, epochs=0.05, seeds=self.final.seeds[:1],
                                      recovery_epochs=[0.05] if self.final.recovery_epochs else [],
                                      targets={k: v[:1] for k, v in self.final.targets.items()}),
            joint=dataclasses.replace(self.joint, targets=self.joint.targets[:1], seeds=self.joint.seeds[:1], budget=4,
                                      n_init=2, sweep_bits=self.joint.sweep_bits[:2]) if self.joint else None,
            trials=self._shrunk_trials(first) if self.trials else None)

    def _shrunk_trials(self, targets: dict[str, list[float]]) -> TrialSettings:
        """The first arm set at the searches' first target and seed, fine-tuned briefly; two ranked candidates."""
        t = self.trials
        arms = t.arms[0]
        model = arms.models[0]
        arms = dataclasses.replace(arms, models=[model], targets=targets[model], seeds=self.search.seeds[:1],
                                   epochs=[0.05],
                                   criteria=[c for c in arms.criteria if c in self.search.compare_criteria][:1])
        return dataclasses.replace(t, arms=[arms], ranked=min(t.ranked, 2), ranked_model=model,
                                   ranked_target=targets[model][0], ranked_seed=self.search.seeds[0])


def preset_path(name: str | Path) -> Path:
    """A study preset by name (``qrepro/presets/<name>.toml``) or by path."""
    p = Path(name)
    if p.suffix == ".toml" or p.exists():
        return p
    return STUDY_PRESETS_DIR / f"{name}.toml"


def available_presets() -> list[str]:
    return sorted(p.stem for p in STUDY_PRESETS_DIR.glob("*.toml"))


def load_preset(preset=False) -> StudyConfig:
    """A :class:`StudyConfig` from a config, a preset name or path, or ``smoke`` as a bool
    (``True``: ``"smoke"``, ``False``: ``"full"``)."""
    if isinstance(preset, StudyConfig):
        return preset
    if isinstance(preset, bool):
        return load_study("smoke" if preset else "full")
    return load_study(preset)


def load_study(name: str | Path = "full") -> StudyConfig:
    """Read and validate a study preset; errors name the file and the field."""
    path = preset_path(name)
    if not path.is_file():
        raise ConfigError(f"no study preset {str(name)!r} ({path} does not exist); "
                          f"presets: {', '.join(available_presets())}, or pass a .toml path")
    data = read_config_file(path)
    data.setdefault("name", path.stem)
    return from_mapping(StudyConfig, data, str(path))
