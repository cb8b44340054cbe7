"""The study: every computing stage that the notebooks read, each cached under a key.

Stages (``python -m qrepro study``), in order:

1. ``base``: full-precision, BNN and 2-bit DoReFa ResNet-20 (the quantized ones start from
   the full-precision checkpoint); writes ``checkpoints/base-<kind>-<key>.pt``.
2. ``ablation``: every criterion at uniform ratios on both quantized models after
   BatchNorm re-estimation, and after a short fine-tune at one ratio; writes
   ``tables/ablation-<key>.csv``.
3. ``search``: BO, random search and the uniform ratio at each size target and seed, and
   the multi-objective front; writes ``journals/search-...-<key>.jsonl``.
4. ``final``: fine-tunes the best BO configuration and the uniform one at each target and
   writes packed models ``checkpoints/final-...-<key>.qrpk`` with their metrics.

Each artifact's name carries the hash of everything that determines it (its settings and
the keys of its inputs), with versions, seeds and device inside; a stage whose artifact
exists is skipped, so a killed study resumes where it stopped.  ``smoke=True`` runs the
same code at a tiny scale (minutes on 2 CPU cores) for CI and the notebooks' smoke mode.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pandas as pd
import torch

from .cache import artifact_path, config_key, require, write_json_atomic
from .checkpoint import environment_info, load_checkpoint
from .paths import checkpoints_dir, journals_dir, results_dir, tables_dir
from .size import model_size_bytes
from .train import TrainConfig, evaluate

BASE_KINDS = ("fp", "bnn", "dorefa")
QUANT_KINDS = ("bnn", "dorefa")

# Full-scale defaults (Fashion-MNIST, ResNet-20, 2 CPU cores); see README "Protocol".
FULL = {
    "dataset": "fashion-mnist",
    "arch": "resnet20",
    "val_size": 5000,
    "limit": None,
    "base": {
        "fp": dict(epochs=3, optimizer="sgd", lr=0.1, weight_decay=5e-4),
        "bnn": dict(scheme="bnn", epochs=4, optimizer="adam", lr=1e-3, weight_decay=0.0),
        "dorefa": dict(scheme="dorefa", w_bits=2, a_bits=2, epochs=4, optimizer="adam", lr=1e-3, weight_decay=0.0),
    },
    # what one evaluation of a pruned candidate uses (ablation and search alike)
    "evaluation": dict(bn_batches=5, val_images=1000),
    "ablation": dict(criteria=["redundancy", "redundancy-gm", "fpgm", "l1", "bn_scale", "random"],
                     ratios=[0.25, 0.5, 0.75], random_seeds=[0, 1, 2], finetune_ratio=0.5, finetune_steps=60,
                     finetune_lr=1e-4),
    "search": dict(targets={"bnn": [0.2612, 0.5], "dorefa": [0.2612, 0.5]}, methods=["bo", "random", "uniform"],
                   seeds=[0, 1, 2], budget=60, n_init=10, q=1, r_max=0.9, criterion="redundancy",
                   pareto_budget=60, pareto_model="bnn"),
    "final": dict(epochs=0.25, lr=1e-4, seeds=[0, 1], targets={"bnn": [0.2612, 0.5], "dorefa": [0.2612, 0.5]}),
}

SMOKE = copy.deepcopy(FULL)
SMOKE.update(limit=512, val_size=5000)
for _kind in BASE_KINDS:
    SMOKE["base"][_kind]["epochs"] = 1
SMOKE["evaluation"] = dict(bn_batches=2, val_images=128)
SMOKE["ablation"].update(ratios=[0.5], random_seeds=[0, 1], finetune_steps=3)
SMOKE["search"].update(seeds=[0], budget=4, n_init=2, pareto_budget=4, targets={"bnn": [0.2612], "dorefa": [0.2612]})
SMOKE["final"].update(epochs=0.05, seeds=[0], targets={"bnn": [0.2612], "dorefa": [0.2612]})

# the ablation's criteria are registered criteria plus named option sets
CRITERION_VARIANTS = {
    "redundancy": ("redundancy", {"tie_break": "gamma"}),
    "redundancy-gm": ("redundancy", {"tie_break": "geometric_median"}),
    "fpgm": ("fpgm", {}), "l1": ("l1", {}), "bn_scale": ("bn_scale", {}), "random": ("random", {}),
}


def study_settings(smoke: bool = False) -> dict:
    return copy.deepcopy(SMOKE if smoke else FULL)


def _command(stage: str, smoke: bool) -> str:
    return f"python -m qrepro study --stages {stage}" + (" --smoke" if smoke else "") + \
        "  (or: make study" + (" SMOKE=1" if smoke else "") + ")"


# --------------------------------------------------------------------------- stage 1: base models
def base_config(kind: str, smoke: bool = False) -> TrainConfig:
    """The training config of base model ``kind`` (``fp``, ``bnn``, ``dorefa``)."""
    if kind not in BASE_KINDS:
        raise ValueError(f"unknown base model {kind!r}; accepted values: {', '.join(BASE_KINDS)}")
    st = study_settings(smoke)
    cfg = TrainConfig(arch=st["arch"], dataset=st["dataset"], val_size=st["val_size"], limit=st["limit"],
                      **st["base"][kind])
    if kind != "fp":
        cfg.init_from = str(Path("checkpoints") / base_checkpoint_path("fp", smoke).name)
    return cfg


def base_checkpoint_path(kind: str, smoke: bool = False, root=None) -> Path:
    return artifact_path(checkpoints_dir(root), f"base-{kind}", base_config(kind, smoke).to_dict(), ".pt")


def train_base(kind: str, smoke: bool = False, root=None, data_root=None, progress: bool = True) -> Path:
    """Train base model ``kind`` unless its checkpoint (same key) is already cached."""
    cfg = base_config(kind, smoke)
    path = base_checkpoint_path(kind, smoke, root)
    if path.exists():
        print(f"[cached] {path.name}")
        return path
    if cfg.init_from:
        train_base("fp", smoke, root, data_root, progress)
    from .train import train_model

    print(f"[train] {path.name}")
    train_model(cfg, out=str(path), data_root=data_root, progress=progress, results_root=root)
    return path


def load_base(kind: str, smoke: bool = False, root=None):
    """``(model, payload)`` of a cached base model; a clear error if it is missing or stale."""
    path = require(base_checkpoint_path(kind, smoke, root), _command("base", smoke))
    return load_checkpoint(path, expected_arch=study_settings(smoke)["arch"])


def load_study_data(smoke: bool = False, data_root=None):
    from .data import load_splits

    st = study_settings(smoke)
    return load_splits(st["dataset"], root=data_root, val_size=st["val_size"], batch_size=128, seed=0,
                       limit=st["limit"])


def make_objective(model, splits, smoke: bool, criterion: str = "redundancy", finetune_steps: int = 0, seed: int = 0):
    from .objective import PruneObjective

    st = study_settings(smoke)
    name, options = CRITERION_VARIANTS[criterion]
    return PruneObjective(model, splits, name, criterion_options=options, finetune_steps=finetune_steps,
                          finetune_lr=st["ablation"]["finetune_lr"], seed=seed, **st["evaluation"])


# --------------------------------------------------------------------------- stage 2: ablation
def ablation_config(smoke: bool = False) -> dict:
    st = study_settings(smoke)
    return {"ablation": st["ablation"], "evaluation": st["evaluation"],
            "models": {k: base_checkpoint_path(k, smoke).name for k in QUANT_KINDS}}


def ablation_path(smoke: bool = False, root=None) -> Path:
    return artifact_path(tables_dir(root), "ablation", ablation_config(smoke), ".csv")


def run_ablation(smoke: bool = False, root=None, data_root=None, progress: bool = True) -> Path:
    """Every criterion at the uniform ratios, after BN re-estimation (and a short fine-tune at
    one ratio), on both quantized models; validation accuracy, one row per run.  Rows are
    appended to a partial file as they finish, so a killed ablation resumes."""
    from tqdm.auto import tqdm

    path = ablation_path(smoke, root)
    if path.exists():
        print(f"[cached] {path.name}")
        return path
    cfg = ablation_config(smoke)["ablation"]
    splits = load_study_data(smoke, data_root)
    partial = path.with_suffix(".partial.jsonl")
    partial.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(x) for x in partial.read_text().splitlines()] if partial.exists() else []
    seen = {(r["model"], r["criterion"], r["ratio"], r["seed"], r["stage"]) for r in done}
    jobs = []
    for kind in QUANT_KINDS:
        for crit in cfg["criteria"]:
            for seed in (cfg["random_seeds"] if crit == "random" else [0]):
                jobs += [(kind, crit, r, seed, "bn") for r in cfg["ratios"]]
                jobs.append((kind, crit, cfg["finetune_ratio"], seed, "finetune"))
    todo = [j for j in jobs if j not in seen]
    models = {k: load_base(k, smoke, root)[0] for k in QUANT_KINDS}
    for kind, crit, ratio, seed, stage in tqdm(todo, desc="ablation", disable=not progress):
        steps = cfg["finetune_steps"] if stage == "finetune" else 0
        obj = make_objective(models[kind], splits, smoke, crit, steps, seed)
        t0 = time.time()
        with torch.enable_grad():
            pruned = obj.prune(ratio)
        row = {"model": kind, "criterion": crit, "ratio": ratio, "seed": seed, "stage": stage,
               "val_acc": evaluate(pruned, obj.val)["acc"], "size_bytes": model_size_bytes(pruned),
               "seconds": time.time() - t0}
        with open(partial, "a") as f:
            f.write(json.dumps(row) + "\n")
    rows = [json.loads(x) for x in partial.read_text().splitlines()]
    df = pd.DataFrame(rows)
    df["unpruned_size_bytes"] = df["model"].map({k: model_size_bytes(m) for k, m in models.items()})
    tmp = path.with_suffix(".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)
    write_json_atomic(path.with_suffix(".meta.json"), {"config": ablation_config(smoke),
                                                       "versions": environment_info()})
    partial.unlink()
    return path


# --------------------------------------------------------------------------- stage 3: searches
def search_jobs(smoke: bool = False) -> list[dict]:
    st = study_settings(smoke)["search"]
    jobs = []
    for kind in QUANT_KINDS:
        for target in st["targets"][kind]:
            for method in st["methods"]:
                for seed in (st["seeds"] if method != "uniform" else [0]):
                    jobs.append(dict(model=kind, mode="constrained", target=target, method=method, seed=seed))
    jobs.append(dict(model=st["pareto_model"], mode="pareto", target=0.0, method="bo", seed=0))
    return jobs


def search_job_config(job: dict, smoke: bool = False) -> dict:
    st = study_settings(smoke)
    s = st["search"]
    budget = s["pareto_budget"] if job["mode"] == "pareto" else s["budget"]
    return {"job": job, "budget": budget, "n_init": s["n_init"], "q": s["q"], "r_max": s["r_max"],
            "criterion": s["criterion"], "evaluation": st["evaluation"],
            "model": base_checkpoint_path(job["model"], smoke).name}


def search_journal_path(job: dict, smoke: bool = False, root=None) -> Path:
    name = f"search-{job['model']}-{job['mode']}-{job['method']}-t{job['target']}-s{job['seed']}"
    return artifact_path(journals_dir(root), name, search_job_config(job, smoke), ".jsonl")


def run_search_job(job: dict, smoke: bool = False, root=None, splits=None, data_root=None, progress: bool = True):
    from .prune import prunable_layers
    from .search import SearchConfig, SizeModel, search_ratios

    cfg = search_job_config(job, smoke)
    path = search_journal_path(job, smoke, root)
    done_marker = path.with_suffix(".done")
    if done_marker.exists():
        print(f"[cached] {path.name}")
        return path
    model, _ = load_base(job["model"], smoke, root)
    splits = splits or load_study_data(smoke, data_root)
    layers = prunable_layers(model)
    sc = SearchConfig(layers=layers, method=job["method"], mode=job["mode"], target=job["target"] or 0.0,
                      r_max=cfg["r_max"], budget=cfg["budget"], n_init=cfg["n_init"], q=cfg["q"], seed=job["seed"],
                      ref_accuracy=0.0 if job["mode"] == "pareto" else None, extra={"study": cfg})
    objective = make_objective(model, splits, smoke, cfg["criterion"], 0, job["seed"])
    print(f"[search] {path.name}")
    search_ratios(objective, SizeModel.from_model(model, layers), sc, journal=path, progress=progress)
    done_marker.write_text("done\n")
    return path


def _run_jobs(jobs, is_cached, run_one, smoke: bool, data_root):
    """Run each job not cached, loading the data once and only if some job needs it."""
    splits = None
    for job in jobs:
        if splits is None and not is_cached(job):
            splits = load_study_data(smoke, data_root)
        run_one(job, splits)


def run_searches(smoke: bool = False, root=None, data_root=None, progress: bool = True):
    _run_jobs(search_jobs(smoke), lambda j: search_journal_path(j, smoke, root).with_suffix(".done").exists(),
              lambda j, splits: run_search_job(j, smoke, root, splits, data_root, progress), smoke, data_root)


# --------------------------------------------------------------------------- stage 4: fine-tune finals
def final_jobs(smoke: bool = False) -> list[dict]:
    st = study_settings(smoke)["final"]
    return [dict(model=k, method=m, target=t, seed=s) for k in QUANT_KINDS for t in st["targets"][k]
            for m in ("bo", "uniform") for s in st["seeds"]]


def final_config(job: dict, smoke: bool = False) -> dict:
    st = study_settings(smoke)
    seeds = st["search"]["seeds"] if job["method"] != "uniform" else [0]
    searches = [search_journal_path(dict(model=job["model"], mode="constrained", target=job["target"],
                                         method=job["method"], seed=s), smoke).name for s in seeds]
    return {"job": job, "final": st["final"], "evaluation": st["evaluation"], "searches": searches}


def final_path(job: dict, smoke: bool = False, root=None) -> Path:
    name = f"final-{job['model']}-{job['method']}-t{job['target']}-s{job['seed']}"
    return artifact_path(checkpoints_dir(root), name, final_config(job, smoke), ".qrpk")


def chosen_ratios(job: dict, smoke: bool = False, root=None) -> dict:
    """The ratios a final model starts from: the best feasible evaluation over all seeds'
    searches of its method (BO: the best configuration found; uniform: its one evaluation)."""
    from .search import best_feasible, load_journal

    found = []
    for name in final_config(job, smoke)["searches"]:
        header, evals = load_journal(require(journals_dir(root) / name, _command("search", smoke)))
        found.append((best_feasible(evals), header["config"]["layers"]))
    best, layers = max(found, key=lambda bl: bl[0]["value"])  # the first search wins a tie
    return dict(zip(layers, best["ratios"]))


def run_final(job: dict, smoke: bool = False, root=None, splits=None, data_root=None, progress: bool = True) -> Path:
    from .export import save_packed
    from .prune import prune, recalibrate_batchnorm
    from .train import train

    path = final_path(job, smoke, root)
    if path.exists():
        print(f"[cached] {path.name}")
        return path
    st = study_settings(smoke)
    ratios = chosen_ratios(job, smoke, root)
    model, payload = load_base(job["model"], smoke, root)
    splits = splits or load_study_data(smoke, data_root)
    crit, options = CRITERION_VARIANTS[st["search"]["criterion"]]
    pruned = prune(model, ratios, crit, criterion_options=options)
    recalibrate_batchnorm(pruned, splits.train_eval, st["evaluation"]["bn_batches"])
    before = evaluate(pruned, splits.val)["acc"]
    tc = TrainConfig(epochs=st["final"]["epochs"], optimizer="adam", lr=st["final"]["lr"], weight_decay=0.0,
                     seed=job["seed"])
    print(f"[finetune] {path.name}")
    history = train(pruned, splits, tc, progress=progress)
    metrics = {"val_acc_before_finetune": before, "val_acc": evaluate(pruned, splits.val)["acc"],
               "size_bytes": model_size_bytes(pruned), "ratios": ratios, "history": history}
    save_packed(path, pruned, config={"job": job, "final": final_config(job, smoke), "metrics": metrics,
                                      "versions": environment_info()})
    return path


def run_finals(smoke: bool = False, root=None, data_root=None, progress: bool = True):
    _run_jobs(final_jobs(smoke), lambda j: final_path(j, smoke, root).exists(),
              lambda j, splits: run_final(j, smoke, root, splits, data_root, progress), smoke, data_root)


# --------------------------------------------------------------------------- driver
STAGES = ("base", "ablation", "search", "final")


def run_study(stages=STAGES, smoke: bool = False, root=None, data_root=None, progress: bool = True) -> Path:
    """Run the stages in order (each skipping what is cached) and record their times."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; accepted values: {', '.join(STAGES)}")
    times = {}
    for stage in STAGES:
        if stage not in stages:
            continue
        t0 = time.time()
        if stage == "base":
            for kind in BASE_KINDS:
                train_base(kind, smoke, root, data_root, progress)
        elif stage == "ablation":
            run_ablation(smoke, root, data_root, progress)
        elif stage == "search":
            run_searches(smoke, root, data_root, progress)
        else:
            run_finals(smoke, root, data_root, progress)
        times[stage] = time.time() - t0
        print(f"[stage {stage}] {times[stage]:.0f} s")
    log = results_dir(root) / ("study-smoke.json" if smoke else "study.json")
    previous = json.loads(log.read_text()) if log.exists() else {}
    runs = previous.get("runs", []) + [{"stages": list(stages), "seconds": times, "finished": time.ctime()}]
    write_json_atomic(log, {"settings": study_settings(smoke), "key": config_key(study_settings(smoke)),
                            "versions": environment_info(), "runs": runs})
    return log
