"""The study: every computing stage the notebooks read, as one artifact graph.

A study is a preset (``qrepro/presets/<name>.toml``, :class:`~qrepro.config.StudyConfig`).
:func:`study_graph` registers every artifact it makes -- the function that makes it, its
config, its inputs, the code it depends on and whether it reads data -- in one place
(:mod:`qrepro.artifacts` keys, records and checks them).  Stages, in order:

1. ``base``: full-precision, BNN and 2-bit DoReFa models (the quantized ones start from the
   full-precision checkpoint): ``checkpoints/base-<kind>-<key>.pt``;
2. ``ablation``: every criterion at uniform ratios on both quantized models, after BatchNorm
   re-estimation and after a short fine-tune: ``tables/ablation-<key>.csv`` (rows are
   appended to ``.partial.jsonl`` as they finish, so a killed ablation resumes);
3. ``search``: BO, random search and the uniform ratio per size target and seed, and the
   multi-objective front: ``journals/search-...-<key>.jsonl`` (resumable journals);
4. ``final``: the best BO configuration and the uniform one, fine-tuned:
   ``checkpoints/final-...-<key>.qrpk``;
5. ``evaluate``: test-set metrics of every base and final model, and a GP posterior slice;
6. ``tables``: every table the notebooks show (``tables/<name>.csv`` and ``.md``).

``run_study`` builds what is not fresh (a legacy artifact, made before code fingerprints,
is used as it is); ``python -m qrepro status`` reports every artifact.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import functools
import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import distributed, tables
from .artifacts import Artifact, Graph, code_closure
from .cache import write_json_atomic, write_text_atomic
from .checkpoint import environment_info, load_checkpoint
from .cluster import connect
from .config import ANY_PRECISION, BASE_KINDS, QUANT_KINDS, StudyConfig, load_preset
from .criteria import variant
from .data import dataset_identity, load_splits, loader_size, subset_loader
from .device import resolve_device
from .errors import BadInput, check_input_file, check_writable_dir
from .export import load_packed, save_packed
from .gp import fit_gp
from .jobs import final_jobs, gp_slice_job, joint_jobs, search_jobs, trial_jobs
from .journal import append_record, load_journal, read_records
from .lock import hold
from .objective import PruneObjective
from .paths import manifest_path, results_dir
from .precision import PrecisionCost, layer_bits, set_bits
from .prune import prunable_layers, prune, recalibrate_batchnorm
from .search import SearchConfig, best_feasible, search_ratios
from .size import SizeModel, model_size_bytes
from .space import uniform_ratio
from .train import TrainConfig, evaluate, train, train_model
from .validation import from_mapping

STAGES = ("base", "ablation", "search", "final", "trials", "joint", "evaluate", "tables")
DISTRIBUTED_STAGES = ("base", "final")  # the stages that train, and so run data-parallel under torchrun
# modules every maker reaches that never change what an artifact holds (so not in any key)
NOT_KEYED = {"artifacts": "the graph's bookkeeping: keys, paths, status, the manifest",
             "errors": "error classes and input checks",
             "paths": "where files live"}
# and per maker, modules its imports reach that it never runs
BASE_NOT_KEYED = {"criteria": "imported by prune; training never selects filters",
                  "config": "the preset's reader: what a base model takes from it is in its config and data identity",
                  **dict.fromkeys(("search", "gp", "space", "acquisition", "likelihood", "objective", "journal",
                                   "cluster", "lock"),
                                  "the searches' code, reached through the study's settings; training never searches")}
TABLES = ("baselines", "filter_duplicates", "resnet18_size", "ablation_summary", "search_summary", "pareto_front",
          "paper_table", "paper_reference", "claims", "criterion_search", "recovery", "precision_sweep",
          "joint_summary", "trials", "trial_claims")
SWEEP_BN_BATCHES = 20  # batches of 128 training images re-estimating BatchNorm for each model of the precision sweep


def _rebuild_command(cfg: StudyConfig, root, data_root=None) -> callable:
    """The command that builds a stage again (``None``: the whole study), with every option that made this study
    what it is."""
    preset = re.sub(r"-limit\d+$", "", cfg.name)  # StudyConfig.shrunk's naming; --limit is in the overrides
    extra = "".join(f" {o}" for o in cfg.overrides)
    extra += "" if data_root is None else f" --data-root {data_root}"
    extra += "" if root is None else f" --results {root}"
    return lambda stage=None: (f"python -m qrepro study --preset {preset}"
                               f"{'' if stage is None else f' --stages {stage}'}{extra}")


@dataclass
class Study:
    """What the makers share in one run: the settings, the artifact graph, the data and the device
    (loaded once, on first use), the Dask client of the searches, and whether to show progress."""

    config: StudyConfig
    graph: Graph
    data_root: str | Path | None = None
    progress: bool = True
    _splits: object = field(default=None, repr=False)
    _dask: tuple | None = field(default=None, repr=False)

    @functools.cached_property
    def device(self) -> torch.device:
        """The study's device, resolved once (after :func:`run_study` has set up torchrun's ranks)."""
        return resolve_device(self.config.device)

    def splits(self):
        if self._splits is None:
            self._splits = load_study_data(self.config, self.data_root, self.device)
        return self._splits

    def base(self, kind: str):
        """``(model, payload)`` of a base model, digest checked (by the manifest: a legacy file may
        predate the checkpoint's own checksums)."""
        return load_checkpoint(self.graph.resolve(f"base/{kind}"), expected_arch=self.config.arch,
                               trust_unverified=True)

    def dask_client(self):
        """The Dask client of the searches (None: they evaluate in this process); one cluster serves
        every search of a run and is closed by :meth:`close`."""
        s = self.config.search
        if s.scheduler is None:
            return None
        if self._dask is None:
            self._dask = connect(s.scheduler, s.workers)
        return self._dask[0]

    def close(self):
        client, cluster = self._dask or (None, None)
        if cluster is not None:
            client.close()
            cluster.close()
        self._dask = None


def load_study_data(preset=False, data_root=None, device=None):
    """The study's train / validation / test splits (on ``device`` when given)."""
    cfg = load_preset(preset)
    splits = load_splits(cfg.dataset, root=data_root, val_size=cfg.val_size, batch_size=128, seed=0,
                         limit=cfg.limit, **cfg.loader_options())
    return splits.to(device) if device is not None else splits


# --------------------------------------------------------------------------- the graph
def _code(maker, exempt: dict | None = None) -> tuple[str, ...]:
    return _closure_of(maker, tuple(sorted({**NOT_KEYED, **(exempt or {})})))


@functools.lru_cache(maxsize=None)
def _closure_of(maker, exempt: tuple[str, ...]) -> tuple[str, ...]:
    """One maker's code list, computed once per process (every search and final shares its maker's)."""
    return code_closure(maker, exempt=exempt)


def study_graph(preset=False, root=None, data_root=None) -> Graph:
    """Every artifact of the study ``preset`` under ``root``, registered in one place."""
    cfg = load_preset(preset)
    arts: list[Artifact] = []
    for kind in cfg.base_kinds:
        tc = from_mapping(TrainConfig, cfg.base_fields(kind), f"base.{kind}")
        arts.append(Artifact(f"base/{kind}", "checkpoints", f"base-{kind}", ".pt", make_base, tc.to_dict(),
                             () if kind == "fp" else ("base/fp",), _code(make_base, exempt=BASE_NOT_KEYED), True,
                             stage="base"))
    evaluation = vars(cfg.evaluation)
    arts.append(Artifact("ablation", "tables", "ablation", ".csv", make_ablation,
                         {"ablation": vars(cfg.ablation), "evaluation": evaluation,
                          "criterion_variants": {c: variant(c) for c in cfg.ablation.criteria}},
                         tuple(f"base/{k}" for k in QUANT_KINDS), _code(make_ablation), True, stage="ablation",
                         resumable=True, partial=".partial.jsonl"))
    s = cfg.search
    arts.append(Artifact("sensitivity", "tables", "sensitivity", ".csv", make_sensitivity,
                         {"models": list(QUANT_KINDS), "ratios": cfg.ablation.ratios, "criterion": s.criterion,
                          "criterion_variant": variant(s.criterion), "evaluation": evaluation},
                         tuple(f"base/{k}" for k in QUANT_KINDS), _code(make_sensitivity), True, stage="ablation"))
    for job in search_jobs(cfg):
        budget = s.pareto_budget if job.mode == "pareto" else s.budget
        crit = job.criterion_in(cfg)
        conf = {"job": job.to_dict(), "budget": budget, "n_init": s.n_init, "q": s.q, "r_max": s.r_max,
                "criterion": crit, "criterion_variant": variant(crit), "evaluation": evaluation}
        arts.append(Artifact(job.id, "journals", job.id.replace("/", "-"), ".jsonl", make_search, conf,
                             (f"base/{job.model}",), _code(make_search), True, stage="search", resumable=True))
    for job in final_jobs(cfg):
        crit = job.criterion_in(cfg)
        conf = {"job": job.to_dict(), "final": _final_training(cfg), "evaluation": evaluation, "criterion": crit,
                "criterion_variant": variant(crit)}
        arts.append(Artifact(job.id, "checkpoints", job.id.replace("/", "-"), ".qrpk", make_final, conf,
                             (f"base/{job.model}", *(j.id for j in job.searches(cfg))), _code(make_final), True,
                             stage="final"))
    f = cfg.final
    if f.recovery_epochs:
        conf = {"model": f.recovery_model, "target": f.recovery_target, "epochs": f.recovery_epochs, "lr": f.lr,
                "seed": f.seeds[0], "r_max": s.r_max, "criterion": s.criterion,
                "criterion_variant": variant(s.criterion), "evaluation": evaluation}
        arts.append(Artifact("recovery", "tables", "recovery", ".json", make_recovery, conf,
                             (f"base/{f.recovery_model}",), _code(make_recovery), True, stage="final"))
    trials = trial_jobs(cfg)
    for job in trials:
        search = job.search()
        crit = job.criterion_in(cfg)
        conf = {"job": job.to_dict(), "epochs": job.epochs, "lr": cfg.trials.lr, "criterion": crit,
                "criterion_variant": variant(crit), "evaluation": evaluation, "r_max": s.r_max,
                "select_top": cfg.trials.select_top, "selection_images": cfg.trials.selection_images,
                **({"ranked": cfg.trials.ranked} if job.rank is not None else {})}
        arts.append(Artifact(job.id, "tables", job.id.replace("/", "-"), ".json", make_trial, conf,
                             (f"base/{job.model}",) + ((search.id,) if search else ()), _code(make_trial), True,
                             stage="trials"))
    joints = joint_jobs(cfg)
    for job in joints:
        conf = {"job": job.to_dict(), "search": job.search_fields(cfg), "criterion": s.criterion,
                "criterion_variant": variant(s.criterion), "evaluation": evaluation}
        arts.append(Artifact(job.id, "journals", job.id.replace("/", "-"), ".jsonl", make_joint_search, conf,
                             (f"base/{ANY_PRECISION}",), _code(make_joint_search), True, stage="joint",
                             resumable=True))
    if cfg.joint:
        arts.append(Artifact("precision_sweep", "tables", "precision_sweep", ".json", make_precision_sweep,
                             {"bits": cfg.joint.sweep_bits, "bn_batches": SWEEP_BN_BATCHES},
                             (f"base/{ANY_PRECISION}",) + tuple(f"base/{k}" for k in QUANT_KINDS),
                             _code(make_precision_sweep), True, stage="joint"))
    finals = tuple(j.id for j in final_jobs(cfg))
    arts.append(Artifact("test_metrics", "tables", "test_metrics", ".json", make_test_metrics, {},
                         tuple(f"base/{k}" for k in cfg.base_kinds) + finals, _code(make_test_metrics), True,
                         stage="evaluate"))
    arts.append(Artifact("gp_slice", "tables", "gp_slice", ".json", make_gp_slice,
                         {"pair": [0, -1], "grid": 40, "r_max": s.r_max}, (gp_slice_job(cfg).id,),
                         _code(make_gp_slice), stage="evaluate"))
    searches = search_jobs(cfg)
    table_inputs = {
        "baselines": tuple(f"base/{k}" for k in BASE_KINDS) + ("test_metrics",),
        "filter_duplicates": tuple(f"base/{k}" for k in QUANT_KINDS),
        "resnet18_size": (), "paper_reference": (), "ablation_summary": ("ablation",),
        "search_summary": tuple(j.id for j in searches if j.mode == "constrained"),
        "pareto_front": tuple(j.id for j in searches if j.mode == "pareto"),
        "paper_table": ("test_metrics",), "claims": ("test_metrics",),
        "criterion_search": ("test_metrics",) + tuple(
            j.id for j in searches if j.method == "bo" and j.mode == "constrained" and j.target == s.compare_target),
        "recovery": ("recovery",), "precision_sweep": ("precision_sweep",),
        "joint_summary": tuple(j.id for j in joints),
        "trials": tuple(j.id for j in trials), "trial_claims": tuple(j.id for j in trials) + tuple(j.id for j in joints),
    }
    optional = {"criterion_search": bool(s.compare_criteria and finals), "recovery": bool(cfg.final.recovery_epochs),
                "precision_sweep": bool(cfg.joint), "joint_summary": bool(cfg.joint), "paper_table": bool(finals),
                "claims": bool(finals), "trials": bool(cfg.trials), "trial_claims": bool(cfg.trials)}
    for name in TABLES:
        if optional.get(name, True):
            arts.append(Artifact(f"table/{name}", cfg.tables, name, ".csv", make_table, {"table": name},
                                 table_inputs[name], _code(make_table), keyed=False, stage="tables"))
    return Graph(arts, root, data_identity=lambda: _data_identity(cfg, data_root),
                 rebuild=_rebuild_command(cfg, root, data_root), study=cfg.name)


def open_study(preset=False, root=None, data_root=None, progress: bool = True) -> Study:
    """The study ``preset`` under ``root``: its settings and its artifact graph (nothing is loaded yet)."""
    cfg = load_preset(preset)
    return Study(cfg, study_graph(cfg, root, data_root), data_root, progress)


ARTIFACT_REFERENCE = re.compile(r"(?:(?P<preset>[A-Za-z0-9_-]+):)?(?P<id>base/[A-Za-z0-9_-]+)")


def resolve_checkpoint(value: str, what: str = "checkpoint", root=None) -> tuple[Path, bool]:
    """A checkpoint named by path, or by the artifact id of a study's base model (``base/bnn``: the full
    study's; ``smoke:base/bnn``: the smoke study's), resolved through the manifest of ``root``, so a
    config keeps working after every rebuild.  Returns ``(path, verified)``: ``verified`` when the
    manifest checked its digest."""
    if Path(value).is_file():
        return Path(value), False
    ref = ARTIFACT_REFERENCE.fullmatch(value)
    if ref is None:
        check_input_file(value, what, "name a checkpoint file, or a study's base model as base/bnn")
    try:
        return study_graph(ref["preset"] or "full", root).resolve(ref["id"]), True
    except KeyError:
        raise BadInput(f"{what}: {value!r} names no base model of the {ref['preset'] or 'full'} study; its base "
                       f"models: {', '.join(i for i in study_graph(ref['preset'] or 'full', root).ids('base'))}") \
            from None


def _data_identity(cfg: StudyConfig, data_root) -> dict:
    ident = dataset_identity(cfg.dataset, data_root)
    return {**ident, "image_size": cfg.image_size} if cfg.image_size else ident


# --------------------------------------------------------------------------- stage 1: base models
def make_base(ctx: Study, art: Artifact, path: Path):
    cfg = TrainConfig(**art.config)
    if art.inputs:
        cfg.init_from = str(ctx.graph.resolve(art.inputs[0]))
    print(f"[train] {path.name}")
    c = ctx.config
    train_model(cfg, out=str(path), data_root=ctx.data_root, progress=ctx.progress, device=c.device,
                loader_options=c.loader_options(), trust_unverified=True)  # init_from: digest checked by resolve


def make_objective(model, splits, cfg: StudyConfig, criterion: str = "redundancy", finetune_steps: int = 0,
                   seed: int = 0) -> PruneObjective:
    name, options = variant(criterion)
    return PruneObjective(model, splits, name, criterion_options=options, finetune_steps=finetune_steps,
                          finetune_lr=cfg.ablation.finetune_lr, seed=seed, bn_batches=cfg.evaluation.bn_batches,
                          val_images=cfg.evaluation.val_images)


# --------------------------------------------------------------------------- stage 2: ablation
ABLATION_COLUMNS = ["model", "criterion", "ratio", "seed", "stage", "val_acc", "size_bytes", "seconds"]


def _check_ablation_row(row: dict) -> str | None:
    need = {"model": str, "criterion": str, "ratio": (int, float), "seed": int, "stage": str, "val_acc": (int, float)}
    for k, t in need.items():
        if not isinstance(row.get(k), t):
            return f"no valid {k}"
    return None


def make_ablation(ctx: Study, art: Artifact, path: Path):
    """Every criterion at the uniform ratios, after BN re-estimation (and a short fine-tune at
    one ratio), on both quantized models; validation accuracy, one row per run."""
    cfg = ctx.config
    a = cfg.ablation
    partial = path.with_suffix(art.partial)
    done = read_records(partial, _check_ablation_row) if partial.exists() else []
    seen = {(r["model"], r["criterion"], r["ratio"], r["seed"], r["stage"]) for r in done}
    jobs = []
    for kind in QUANT_KINDS:
        for crit in a.criteria:
            for seed in (a.random_seeds if crit == "random" else [0]):
                jobs += [(kind, crit, r, seed, "bn") for r in a.ratios]
                jobs.append((kind, crit, a.finetune_ratio, seed, "finetune"))
    todo = [j for j in jobs if j not in seen]
    models = {k: ctx.base(k)[0].to(ctx.device) for k in QUANT_KINDS}
    splits = ctx.splits()
    for kind, crit, ratio, seed, stage in tqdm(todo, desc="ablation", disable=not ctx.progress):
        steps = a.finetune_steps if stage == "finetune" else 0
        obj = make_objective(models[kind], splits, cfg, crit, steps, seed)
        t0 = time.time()
        with torch.enable_grad():
            pruned = obj.prune(ratio)
        row = {"model": kind, "criterion": crit, "ratio": ratio, "seed": seed, "stage": stage,
               "val_acc": evaluate(pruned, obj.val)["acc"], "size_bytes": model_size_bytes(pruned),
               "seconds": time.time() - t0}
        append_record(partial, row)
        done.append(row)
    by_job = {(r["model"], r["criterion"], r["ratio"], r["seed"], r["stage"]): r for r in done}
    df = pd.DataFrame([by_job[j] for j in jobs], columns=ABLATION_COLUMNS)  # resumed or not: one order
    df["unpruned_size_bytes"] = df["model"].map({k: model_size_bytes(m) for k, m in models.items()})
    write_text_atomic(path, df.to_csv(index=False))
    write_json_atomic(path.with_suffix(".meta.json"), {"config": art.config, "versions": environment_info()})


def make_sensitivity(ctx: Study, art: Artifact, path: Path):
    """Validation top-1 of each quantized base model with one prunable group pruned alone at each ratio (the
    others unpruned; ratio 0: the model itself), after BatchNorm re-estimation: how much each layer tolerates."""
    c = art.config
    splits = ctx.splits()
    rows = []
    for kind in c["models"]:
        model = ctx.base(kind)[0].to(ctx.device)
        objective = make_objective(model, splits, ctx.config, c["criterion"])
        layers = prunable_layers(model)
        jobs = [(None, 0.0)] + [(layer, r) for layer in layers for r in c["ratios"]]
        for layer, ratio in tqdm(jobs, desc=f"sensitivity {kind}", disable=not ctx.progress):
            pruned = objective.prune({n: ratio if n == layer else 0.0 for n in layers})
            rows.append({"model": kind, "layer": layer if ratio else "unpruned", "ratio": ratio,
                         "val_acc": evaluate(pruned, objective.val)["acc"], "size_bytes": model_size_bytes(pruned)})
    write_text_atomic(path, pd.DataFrame(rows).to_csv(index=False))
    write_json_atomic(path.with_suffix(".meta.json"), {"config": c, "versions": environment_info()})


# --------------------------------------------------------------------------- stage 3: searches
def make_search(ctx: Study, art: Artifact, path: Path):
    job, c = art.config["job"], art.config
    model, _ = ctx.base(job["model"])
    model.to(ctx.device)
    layers = prunable_layers(model)
    sc = SearchConfig(layers=layers, method=job["method"], mode=job["mode"], target=job["target"] or 0.0,
                      r_max=c["r_max"], budget=c["budget"], n_init=c["n_init"], q=c["q"], seed=job["seed"],
                      ref_accuracy=0.0 if job["mode"] == "pareto" else None, extra={"study": c})
    objective = make_objective(model, ctx.splits(), ctx.config, c["criterion"], 0, job["seed"])
    print(f"[search] {path.name}")
    search_ratios(objective, SizeModel.from_model(model, layers), sc, journal=path, progress=ctx.progress,
                  scheduler=ctx.dask_client())


# --------------------------------------------------------------------------- stage 4: fine-tune finals
def chosen_ratios(ctx: Study, art: Artifact) -> dict:
    """The ratios a final model starts from: the best feasible evaluation over all seeds'
    searches of its method (BO: the best configuration found; uniform: its one evaluation)."""
    found = []
    for sid in art.inputs[1:]:
        header, evals = load_journal(ctx.graph.resolve(sid), trust_unverified=True)  # digest checked by resolve
        found.append((best_feasible(evals), header["config"]["layers"]))
    best, layers = max(found, key=lambda bl: bl[0]["value"])  # the first search wins a tie
    return dict(zip(layers, best["ratios"]))


def _final_training(cfg: StudyConfig) -> dict:
    """What a final model's fine-tune depends on (its key): the length and the learning rate."""
    return {"epochs": cfg.final.epochs, "lr": cfg.final.lr}


def finetune_pruned(ctx: Study, base: torch.nn.Module, ratios: dict, criterion: str, epochs: float, lr: float,
                    seed: int):
    """``base`` (left unchanged) pruned at ``ratios`` with ``criterion``, BatchNorm re-estimated, then
    fine-tuned (Adam, cosine, no weight decay; ``seed`` draws the batches): ``(pruned model, metrics)``."""
    cfg = ctx.config
    splits = ctx.splits()
    crit, options = variant(criterion)
    pruned = prune(base, ratios, crit, criterion_options=options)
    recalibrate_batchnorm(pruned, splits.train_eval, cfg.evaluation.bn_batches)  # the same for every seed
    before = evaluate(pruned, splits.val)["acc"]
    tc = TrainConfig(epochs=epochs, optimizer="adam", lr=lr, weight_decay=0.0, seed=seed)
    t0 = time.time()
    history = train(pruned, splits, tc, progress=ctx.progress)
    return pruned, {"val_acc_before_finetune": before, "val_acc": evaluate(pruned, splits.val)["acc"],
                    "size_bytes": model_size_bytes(pruned), "ratios": ratios, "history": history,
                    "seconds": time.time() - t0}


def make_final(ctx: Study, art: Artifact, path: Path):
    job, f = art.config["job"], art.config["final"]
    ratios = chosen_ratios(ctx, art)
    print(f"[finetune] {path.name}")
    base, _ = ctx.base(job["model"])
    pruned, metrics = finetune_pruned(ctx, base.to(ctx.device), ratios, art.config["criterion"], f["epochs"],
                                      f["lr"], job["seed"])
    if distributed.is_main():  # under torchrun every rank fine-tunes, rank 0 writes
        save_packed(path, pruned, config={"job": job, "final": art.config, "metrics": metrics,
                                          "versions": environment_info(), "distributed": distributed.describe()})


def make_recovery(ctx: Study, art: Artifact, path: Path):
    """The recovery curve: one configuration (the uniform ratio that meets the target) fine-tuned
    for each length, each with its own cosine schedule as a final model's; validation and test top-1."""
    c = art.config
    model, _ = ctx.base(c["model"])
    model.to(ctx.device)
    layers = prunable_layers(model)
    sc = SearchConfig(layers=layers, method="uniform", target=c["target"], r_max=c["r_max"], budget=1)
    ratio = uniform_ratio(sc, SizeModel.from_model(model, layers))
    splits = ctx.splits()
    rows = []
    for epochs in c["epochs"]:
        print(f"[recovery] {c['model']} uniform {ratio:.3f}, {epochs} epochs")
        pruned, m = finetune_pruned(ctx, model, dict.fromkeys(layers, ratio), c["criterion"], epochs, c["lr"],
                                    c["seed"])
        rows.append({"epochs": epochs, "steps": m["history"][-1]["steps"], "val_acc_before": m["val_acc_before_finetune"],
                     "val_acc": m["val_acc"], "test_acc": evaluate(pruned, splits.test)["acc"],
                     "seconds": m["seconds"]})
    base = evaluate(model, splits.val)["acc"], evaluate(model, splits.test)["acc"]
    write_json_atomic(path, {"model": c["model"], "target": c["target"], "ratio": ratio, "lr": c["lr"],
                             "base_val_acc": base[0], "base_test_acc": base[1], "runs": rows,
                             "versions": environment_info()})


# --------------------------------------------------------------------------- stage 4a: Study v2's paired trials
def selection_loader(splits, evaluation: dict, selection_images: int | None):
    """The validation images no search saw (those after ``evaluation["val_images"]``): what trials choose picks on."""
    skip = evaluation["val_images"] or 0
    loader = subset_loader(splits.val, selection_images, batch_size=256, skip=skip)
    if loader_size(loader) == 0:
        raise BadInput(f"trials: no validation images are left to choose picks on: the searches use the first {skip} "
                       f"of {loader_size(splits.val)}; lower evaluation.val_images or raise val_size")
    return loader


def ranked_candidates(journal: Path) -> list[dict]:
    """A search's feasible evaluations, best objective first (a tie: the earlier evaluation first, as
    :func:`qrepro.search.best_feasible` takes it)."""
    _, evals = load_journal(journal, trust_unverified=True)  # digest checked by resolve
    return sorted((e for e in evals if e["feasible"]), key=lambda e: (-e["value"], e["index"]))


def pick_on_selection(objective: PruneObjective, candidates: list[dict], layers: list[str], top: int):
    """Of the ``top`` best ``candidates``, the one whose pruned model (BatchNorm re-estimated) scores highest on
    ``objective``'s images (the selection images): ``(ratios, pruned model, its evaluation, [selection top-1
    of each])``."""
    scored = []
    for e in candidates[:top]:
        ratios = dict(zip(layers, e["ratios"]))
        with torch.no_grad():
            pruned = objective.prune(ratios)
        scored.append((evaluate(pruned, objective.val)["acc"], ratios, pruned, e))
    best = max(range(len(scored)), key=lambda i: scored[i][0])  # the first of equals: the search's better one
    return scored[best][1], scored[best][2], scored[best][3], [a for a, *_ in scored]


def ratio_at_size(size: SizeModel, most: float, r_max: float) -> float:
    """The smallest single ratio for every layer whose exact size is at most ``most`` bytes (bisection: the
    size falls in steps as the ratio grows)."""
    lo, hi = 0.0, r_max
    if size.exact_size([hi] * len(size.layers)) > most:
        raise BadInput(f"no uniform ratio up to r_max={r_max} reaches {most:.0f} bytes")
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if size.exact_size([mid] * len(size.layers)) <= most else (mid, hi)
    return hi


def make_trial(ctx: Study, art: Artifact, path: Path):
    """One arm of the paired trials: the configuration (the search's pick chosen on the selection images; the
    uniform ratio at that pick's exact size; a ranked candidate; or none), fine-tuned with the trial's seed, and
    its top-1 on the selection images before and after and on the test images after."""
    c = art.config
    job = c["job"]
    base, _ = ctx.base(job["model"])
    base.to(ctx.device)
    splits = ctx.splits()
    selection = selection_loader(splits, c["evaluation"], c["selection_images"])
    crit, options = variant(c["criterion"])
    objective = PruneObjective(base, dataclasses.replace(splits, val=selection), crit, criterion_options=options,
                               bn_batches=c["evaluation"]["bn_batches"], val_images=None, seed=job["seed"])
    layers = prunable_layers(base)
    record = {"job": job}
    if job["method"] == "unpruned":
        model = objective.prune(dict.fromkeys(layers, 0.0))  # BatchNorm re-estimated like every pruned arm
        record["ratios"] = dict.fromkeys(layers, 0.0)
    else:
        candidates = ranked_candidates(ctx.graph.resolve(art.inputs[1]))
        if job.get("rank") is not None:
            n = c["ranked"]
            e = candidates[round(job["rank"] * (len(candidates) - 1) / (n - 1))]
            record["ratios"] = dict(zip(layers, e["ratios"]))
            with torch.no_grad():
                model = objective.prune(record["ratios"])
            record["search_value"] = e["value"]
        else:
            ratios, model, e, scores = pick_on_selection(objective, candidates, layers, c["select_top"])
            pick = {"ratios": ratios, "search_value": e["value"], "selection_of_top": scores}
            if job["method"] != "uniform":
                record.update(pick)
            else:  # the uniform ratio at the BO pick's exact size, never above it
                pick["size_bytes"] = model_size_bytes(model)
                r = ratio_at_size(SizeModel.from_model(base, layers), pick["size_bytes"], c["r_max"])
                with torch.no_grad():
                    model = objective.prune(dict.fromkeys(layers, r))
                if model_size_bytes(model) > pick["size_bytes"]:
                    raise RuntimeError(f"the uniform ratio {r} gives {model_size_bytes(model)} bytes, above the BO "
                                       f"pick's {pick['size_bytes']}: SizeModel and model_size_bytes disagree")
                record.update(ratios=dict.fromkeys(layers, r), bo_pick=pick)
    record["size_bytes"] = model_size_bytes(model)
    record["selection_acc_before"] = evaluate(model, selection)["acc"]
    print(f"[trial] {path.name}")
    tc = TrainConfig(epochs=c["epochs"], optimizer="adam", lr=c["lr"], weight_decay=0.0, seed=job["seed"])
    t0 = time.time()
    with torch.enable_grad():
        history = train(model, splits, tc, progress=ctx.progress, eval_every_epoch=False)
    record.update(seconds=time.time() - t0, steps=history[-1]["steps"], selection_acc=evaluate(model, selection)["acc"],
                  test_acc=evaluate(model, splits.test)["acc"], selection_images=loader_size(selection),
                  device=str(ctx.device), versions=environment_info())
    write_json_atomic(path, record)


# --------------------------------------------------------------------------- stage 4b: joint bit-width / pruning search
def make_joint_search(ctx: Study, art: Artifact, path: Path):
    """One search of the joint stage (:class:`qrepro.jobs.JointJob`) on the any-precision model."""
    c = art.config
    model, _ = ctx.base(ANY_PRECISION)
    model.to(ctx.device)
    layers = prunable_layers(model)
    splits = ctx.splits()
    size = PrecisionCost.from_model(model, tuple(next(iter(splits.val))[0].shape[1:]), layers)
    sc = SearchConfig(layers=layers, **c["search"], extra={"study": c})
    objective = make_objective(model, splits, ctx.config, c["criterion"], 0, c["job"]["seed"])
    print(f"[joint] {path.name}")
    search_ratios(objective, size, sc, journal=path, progress=ctx.progress, scheduler=ctx.dask_client())


def make_precision_sweep(ctx: Study, art: Artifact, path: Path):
    """Validation and test top-1 of the any-precision model at each uniform bit-width of ``bits``, beside the
    dedicated quantized models, every one after the same BatchNorm re-estimation (``bn_batches`` batches)."""
    splits, c = ctx.splits(), art.config
    bn_loader = subset_loader(splits.train, c["bn_batches"] * 128, batch_size=128)
    models = []
    anyprec, _ = ctx.base(ANY_PRECISION)
    for bits in c["bits"]:
        models.append(("any-precision", set_bits(copy.deepcopy(anyprec), dict.fromkeys(layer_bits(anyprec), bits))))
    for kind in QUANT_KINDS:
        models.append((f"dedicated {kind}", ctx.base(kind)[0]))
    rows = []
    for label, model in tqdm(models, desc="precision sweep", disable=not ctx.progress):
        model.to(ctx.device)
        recalibrate_batchnorm(model, bn_loader, c["bn_batches"])
        q = model.quant_config
        rows.append({"model": label, "scheme": q["scheme"], "w_bits": q["w_bits"] if label != "any-precision"
                     else next(iter(layer_bits(model).values())), "val_acc": evaluate(model, splits.val)["acc"],
                     "test_acc": evaluate(model, splits.test)["acc"], "size_bytes": model_size_bytes(model)})
    write_json_atomic(path, {"rows": rows, "versions": environment_info()})


# --------------------------------------------------------------------------- stage 5: evaluate
def make_test_metrics(ctx: Study, art: Artifact, path: Path):
    """Test top-1 of every base and final model, with sizes and packed-file sizes."""
    graph = ctx.graph
    splits = ctx.splits()
    out = {"base": {}, "final": {}, "versions": environment_info()}
    for i in tqdm(art.inputs, desc="test metrics", disable=not ctx.progress):
        p = graph.resolve(i)
        if i.startswith("base/"):
            model, payload = load_checkpoint(p, trust_unverified=True)  # digest checked by resolve
            model.to(ctx.device)
            with tempfile.TemporaryDirectory() as tmp:
                disk = save_packed(Path(tmp) / "m.qrpk", model).stat().st_size if getattr(model, "quant_config", None) else None
            out["base"][i.split("/")[1]] = {
                "test_acc": evaluate(model, splits.test)["acc"], "val_acc": payload["metrics"].get("val_acc"),
                "size_bytes": model_size_bytes(model), "file_bytes": disk,
                "params": sum(t.numel() for t in model.parameters()), "epochs": payload["config"]["epochs"],
                "train_seconds": payload["metrics"].get("train_seconds")}
        else:
            model, header = load_packed(p, trust_unverified=True)
            model.to(ctx.device)
            out["final"][i] = {"job": graph[i].config["job"], "test_acc": evaluate(model, splits.test)["acc"],
                               "size_bytes": model_size_bytes(model), "file_bytes": p.stat().st_size,
                               "val_acc": header["config"]["metrics"]["val_acc"]}
    write_json_atomic(path, out)


def make_gp_slice(ctx: Study, art: Artifact, path: Path):
    """Posterior mean and std of a GP fitted to one search's evaluations, over two layers'
    ratios with the others held at the best point (notebook 4 draws it)."""
    header, evals = load_journal(ctx.graph.resolve(art.inputs[0]), trust_unverified=True)
    layers, r_max = header["config"]["layers"], art.config["r_max"]
    pair, grid = art.config["pair"], art.config["grid"]
    x = torch.tensor([r["x"] for r in evals], dtype=torch.double)
    y = torch.tensor([[r["value"]] for r in evals], dtype=torch.double)
    torch.manual_seed(0)
    gp = fit_gp(x, y)
    best = x[int(y.argmax())]
    u = torch.linspace(0, 1, grid, dtype=torch.double)
    a, b = torch.meshgrid(u, u, indexing="ij")
    pts = best.repeat(grid * grid, 1)
    pts[:, pair[0]], pts[:, pair[1]] = a.flatten(), b.flatten()
    with torch.no_grad():
        post = gp.posterior(pts)
    write_json_atomic(path, {
        "layers": [layers[pair[0]], layers[pair[1]]], "grid": (u * r_max).tolist(),
        "mean": post.mean.view(grid, grid).tolist(), "std": post.variance.clamp_min(0).sqrt().view(grid, grid).tolist(),
        "seen": (x[:, pair] * r_max).tolist(), "best": (best[pair] * r_max).tolist(), "search": art.inputs[0]})


# --------------------------------------------------------------------------- stage 6: tables
def make_table(ctx: Study, art: Artifact, path: Path):
    name = art.config["table"]
    df, note, fmt = tables.TABLE_MAKERS[name](ctx)
    tables.write_table(df, path, note=note, floatfmt=fmt)


# --------------------------------------------------------------------------- driver
def run_study(stages=STAGES, preset=False, root=None, data_root=None, progress: bool = True, smoke=None,
              wait: bool = False, only=None) -> Path:
    """Build every artifact of ``stages`` that is not fresh (or legacy), in order; log the times.  ``only``
    (id patterns, ``trial/bnn-*``): those artifacts instead, each after the inputs it still needs.  One
    study writes a results folder at a time (``<results>/study.lock``; ``wait``: wait for the other)."""
    if smoke is not None:
        preset = smoke
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(map(repr, unknown))}; accepted values: {', '.join(STAGES)}")
    check_writable_dir(results_dir(root), "results folder")
    ctx = open_study(preset, root, data_root, progress)
    graph = ctx.graph
    if only:
        plan = graph.needed(graph.matching(only))
        stages = [s for s in STAGES if any(graph[i].stage == s for i in plan)]
    else:
        plan = [i for s in STAGES if s in stages for i in graph.ids(s)]
    if distributed.init_from_env(ctx.config.device):
        others = [s for s in stages if s not in DISTRIBUTED_STAGES]
        if others:
            raise BadInput(f"under torchrun the study runs its training stages only ({', '.join(DISTRIBUTED_STAGES)}); "
                           f"run {', '.join(others)} in one process (python -m qrepro study --stages "
                           f"{' '.join(others)}; searches scale out with --scheduler)")
    graph.data_identity()  # a bad data root fails here, before any work
    check_manifest_present(graph)
    folder = results_dir(root)
    writer = hold(folder / "study", f"the results folder {folder}", wait) if distributed.is_main() \
        else contextlib.nullcontext()  # under torchrun rank 0 alone writes
    with writer:
        times = {}
        try:
            if not only:  # (``needed`` put every missing input of ``only`` in the plan)
                graph.check_inputs(stages)  # a missing input is named before a cluster starts or any work is done
            if any(graph[i].stage == "search" and not graph.done(i) for i in plan):
                ctx.dask_client()  # an unreachable scheduler fails here, before any work
            for n, id in enumerate(plan):
                stage, t0 = graph[id].stage, time.time()
                graph.build(id, ctx)
                times[stage] = times.get(stage, 0.0) + time.time() - t0
                if n + 1 == len(plan) or graph[plan[n + 1]].stage != stage:
                    print(f"[stage {stage}] {times[stage]:.0f} s")
        finally:
            ctx.close()
        log = results_dir(root) / f"study-{ctx.config.name}.json"
        previous = json.loads(log.read_text()) if log.exists() else {}
        runs = previous.get("runs", []) + [{"stages": list(stages), "seconds": times, "finished": time.ctime(),
                                            "versions": environment_info()} | ({"only": list(only)} if only else {})]
        write_json_atomic(log, {"settings": ctx.config.to_dict(), "runs": runs})
    return log


def check_manifest_present(graph: Graph):
    """A results folder that holds artifact files but no manifest is refused: without this a study
    would move every file aside and recompute it."""
    files = graph.files_without_manifest()
    if files:
        raise BadInput(f"{graph.root} holds {len(files)} artifact files but no manifest.json; restore it (git checkout "
                       f"-- {manifest_path(graph.root)}) or re-adopt the intact files: python -m qrepro status "
                       "--rebuild-manifest (with this command's --preset and --results)")


def verify_artifact_file(art: Artifact, path: Path) -> str | None:
    """Why ``path`` is not a whole, intact file of ``art`` (its own checksums; a journal: every
    evaluation it makes), or None: what :meth:`Graph.adopt` re-records without a manifest."""
    try:
        if path.suffix == ".pt":
            load_checkpoint(path, expected_arch=art.config.get("arch"))
        elif path.suffix == ".qrpk":
            load_packed(path)
        elif path.suffix == ".jsonl":
            header, evals = load_journal(path)
            wanted = SearchConfig(**header["config"]).evaluations
            if len(evals) < wanted:
                return f"in progress ({len(evals)} of {wanted} evaluations; the study resumes it)"
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            with path.open() as f:
                next(csv.reader(f))
        else:
            return f"no check for {path.suffix} files"
    except (BadInput, OSError, ValueError, StopIteration) as err:
        return f"{type(err).__name__}: {err}"
    return None


def status_lines(preset=False, root=None, data_root=None) -> tuple[list[str], int]:
    """One line per artifact and the exit code: 1 when anything is stale, missing, in progress or corrupt."""
    cfg = load_preset(preset)
    graph = study_graph(cfg, root, data_root)
    report_ = graph.report()
    root_ = graph.root
    lines = [s.line(root_) for s in report_]
    counts = {}
    for s in report_:
        counts[s.state] = counts.get(s.state, 0) + 1
    orphans = graph.orphans()
    lines.append(f"study {cfg.name!r} in {root_}: " +
                 ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) +
                 (f"; {len(orphans)} older versions (status --remove-orphans deletes them)" if orphans else ""))
    bad = any(not s.usable for s in report_)
    if graph.files_without_manifest():
        lines.append("no manifest.json, but artifact files are here: restore it from git, or re-adopt the intact "
                     "files with status --rebuild-manifest")
    elif bad:
        lines.append(f"rebuild with: {graph.rebuild()}")
    return lines, int(bad)
