"""The study: every computing stage the notebooks read, as one artifact graph.

A study is a preset (``configs/studies/<name>.toml``, :class:`~qrepro.config.StudyConfig`).
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

import json
import time
from pathlib import Path

import pandas as pd
import torch

from . import distributed, report
from .artifacts import Artifact, Graph
from .cache import write_json_atomic
from .checkpoint import environment_info, load_checkpoint
from .config import BASE_KINDS, CRITERION_VARIANTS, QUANT_KINDS, StudyConfig, from_mapping, load_study
from .errors import BadInput
from .journal import append_record, read_records
from .paths import results_dir
from .size import model_size_bytes
from .train import TrainConfig, evaluate

STAGES = ("base", "ablation", "search", "final", "evaluate", "tables")
DISTRIBUTED_STAGES = ("base", "final")  # the stages that train, and so run data-parallel under torchrun
# code each kind of artifact depends on (modules of qrepro, or module:function)
CODE_TRAIN = ("models", "quantize", "train", "data", "checkpoint", "device", "distributed")
CODE_PRUNE = CODE_TRAIN + ("criteria", "prune", "objective", "size", "study:make_objective")
CODE_SEARCH = ("search", "acquisition", "likelihood", "journal")  # what reads, writes or proposes a search's journal
TABLES = ("baselines", "filter_duplicates", "resnet18_size", "ablation_summary", "search_summary", "pareto_front",
          "paper_table", "paper_reference", "claims", "criterion_search", "recovery")


def load_preset(preset=False) -> StudyConfig:
    """A :class:`StudyConfig` from a config, a preset name or path, or ``smoke`` as a bool
    (``True``: ``"smoke"``, ``False``: ``"full"``)."""
    if isinstance(preset, StudyConfig):
        return preset
    if isinstance(preset, bool):
        return load_study("smoke" if preset else "full")
    return load_study(preset)


def study_settings(preset=False) -> dict:
    return load_preset(preset).to_dict()


def _rebuild_command(cfg: StudyConfig, root) -> callable:
    import re

    shrunk = re.fullmatch(r"(.+)-limit(\d+)", cfg.name)  # StudyConfig.shrunk's naming
    preset = f"{shrunk[1]} --limit {shrunk[2]}" if shrunk else cfg.name
    extra = "" if root is None else f" --results {root}"
    return lambda stage: f"python -m qrepro study --preset {preset} --stages {stage}{extra}"


# --------------------------------------------------------------------------- ids
def _criterion_part(job: dict) -> str:
    return f"-{job['criterion']}" if "criterion" in job else ""  # a compared criterion; none: the study's own


def search_id(job: dict) -> str:
    return (f"search/{job['model']}-{job['mode']}-{job['method']}{_criterion_part(job)}-t{job['target']}"
            f"-s{job['seed']}")


def final_id(job: dict) -> str:
    return f"final/{job['model']}-{job['method']}{_criterion_part(job)}-t{job['target']}-s{job['seed']}"


def job_criterion(job: dict, cfg: StudyConfig) -> str:
    """The criterion a search or final job prunes with: its own (``compare_criteria``) or the study's."""
    return job.get("criterion", cfg.search.criterion)


def search_jobs(preset=False) -> list[dict]:
    s = load_preset(preset).search
    jobs = []
    for kind in QUANT_KINDS:
        for target in s.targets.get(kind, []):
            for method in s.methods:
                for seed in (s.seeds if method != "uniform" else [0]):
                    jobs.append(dict(model=kind, mode="constrained", target=target, method=method, seed=seed))
        for crit in s.compare_criteria:
            jobs += [dict(model=kind, mode="constrained", target=s.compare_target, method="bo", seed=seed,
                          criterion=crit) for seed in s.seeds]
    jobs.append(dict(model=s.pareto_model, mode="pareto", target=0.0, method="bo", seed=0))
    return jobs


def final_jobs(preset=False) -> list[dict]:
    cfg = load_preset(preset)
    f = cfg.final
    jobs = [dict(model=k, method=m, target=t, seed=s) for k in QUANT_KINDS for t in f.targets.get(k, [])
            for m in ("bo", "uniform") for s in f.seeds]
    return jobs + [dict(model=k, method="bo", target=cfg.search.compare_target, seed=s, criterion=c)
                   for k in QUANT_KINDS for c in cfg.search.compare_criteria for s in f.seeds]


def final_searches(job: dict, cfg: StudyConfig) -> list[str]:
    seeds = cfg.search.seeds if job["method"] != "uniform" else [0]
    extra = {"criterion": job["criterion"]} if "criterion" in job else {}
    return [search_id(dict(model=job["model"], mode="constrained", target=job["target"], method=job["method"],
                           seed=s, **extra)) for s in seeds]


def gp_slice_job(cfg: StudyConfig) -> dict:
    kind = QUANT_KINDS[0]
    return dict(model=kind, mode="constrained", target=cfg.search.targets[kind][0], method="bo",
                seed=cfg.search.seeds[0])


# --------------------------------------------------------------------------- the graph
def study_graph(preset=False, root=None, data_root=None) -> Graph:
    """Every artifact of the study ``preset`` under ``root``, registered in one place."""
    cfg = load_preset(preset)
    if cfg.search.criterion not in CRITERION_VARIANTS:
        raise ValueError(f"unknown criterion {cfg.search.criterion!r}")
    arts: list[Artifact] = []
    for kind in BASE_KINDS:
        tc = from_mapping(TrainConfig, cfg.base_fields(kind), f"base.{kind}")
        arts.append(Artifact(f"base/{kind}", "checkpoints", f"base-{kind}", ".pt", make_base, tc.to_dict(),
                             () if kind == "fp" else ("base/fp",), CODE_TRAIN + ("study:make_base",), True,
                             stage="base"))
    evaluation = vars(cfg.evaluation)
    arts.append(Artifact("ablation", "tables", "ablation", ".csv", make_ablation,
                         {"ablation": vars(cfg.ablation), "evaluation": evaluation,
                          "criterion_variants": {c: CRITERION_VARIANTS[c] for c in cfg.ablation.criteria}},
                         tuple(f"base/{k}" for k in QUANT_KINDS), CODE_PRUNE + ("journal", "study:make_ablation"), True,
                         stage="ablation"))
    s = cfg.search
    for job in search_jobs(cfg):
        budget = s.pareto_budget if job["mode"] == "pareto" else s.budget
        crit = job_criterion(job, cfg)
        conf = {"job": job, "budget": budget, "n_init": s.n_init, "q": s.q, "r_max": s.r_max,
                "criterion": crit, "criterion_variant": CRITERION_VARIANTS[crit], "evaluation": evaluation}
        arts.append(Artifact(search_id(job), "journals", search_id(job).replace("/", "-"), ".jsonl", make_search,
                             conf, (f"base/{job['model']}",), CODE_PRUNE + CODE_SEARCH + ("cluster", "study:make_search"), True,
                             stage="search", resumable=True))
    for job in final_jobs(cfg):
        crit = job_criterion(job, cfg)
        conf = {"job": job, "final": _final_training(cfg), "evaluation": evaluation, "criterion": crit,
                "criterion_variant": CRITERION_VARIANTS[crit]}
        arts.append(Artifact(final_id(job), "checkpoints", final_id(job).replace("/", "-"), ".qrpk", make_final, conf,
                             (f"base/{job['model']}", *final_searches(job, cfg)),
                             CODE_PRUNE + CODE_SEARCH + ("export", "study:make_final", "study:finetune_pruned", "study:chosen_ratios"),
                             True,
                             stage="final"))
    f = cfg.final
    if f.recovery_epochs:
        conf = {"model": f.recovery_model, "target": f.recovery_target, "epochs": f.recovery_epochs, "lr": f.lr,
                "seed": f.seeds[0], "r_max": s.r_max, "criterion": s.criterion,
                "criterion_variant": CRITERION_VARIANTS[s.criterion], "evaluation": evaluation}
        arts.append(Artifact("recovery", "tables", "recovery", ".json", make_recovery, conf,
                             (f"base/{f.recovery_model}",),
                             CODE_PRUNE + CODE_SEARCH + ("cluster", "study:make_recovery", "study:finetune_pruned"), True,
                             stage="final"))
    finals = tuple(final_id(j) for j in final_jobs(cfg))
    arts.append(Artifact("test_metrics", "tables", "test_metrics", ".json", make_test_metrics, {},
                         tuple(f"base/{k}" for k in BASE_KINDS) + finals,
                         CODE_TRAIN + ("export", "size", "prune", "study:make_test_metrics"), True, stage="evaluate"))
    arts.append(Artifact("gp_slice", "tables", "gp_slice", ".json", make_gp_slice,
                         {"pair": [0, -1], "grid": 40, "r_max": s.r_max}, (search_id(gp_slice_job(cfg)),),
                         CODE_SEARCH + ("study:make_gp_slice",), stage="evaluate"))
    searches = tuple(search_id(j) for j in search_jobs(cfg))
    table_inputs = {
        "baselines": tuple(f"base/{k}" for k in BASE_KINDS) + ("test_metrics",),
        "filter_duplicates": tuple(f"base/{k}" for k in QUANT_KINDS),
        "resnet18_size": (), "paper_reference": (), "ablation_summary": ("ablation",),
        "search_summary": tuple(i for i, j in zip(searches, search_jobs(cfg)) if j["mode"] == "constrained"),
        "pareto_front": tuple(i for i, j in zip(searches, search_jobs(cfg)) if j["mode"] == "pareto"),
        "paper_table": ("test_metrics",), "claims": ("test_metrics",),
        "criterion_search": ("test_metrics",) + tuple(
            i for i, j in zip(searches, search_jobs(cfg))
            if j["method"] == "bo" and j["mode"] == "constrained" and j["target"] == s.compare_target),
        "recovery": ("recovery",),
    }
    optional = {"criterion_search": bool(s.compare_criteria), "recovery": bool(cfg.final.recovery_epochs)}
    for name in TABLES:
        if not optional.get(name, True):
            continue
        arts.append(Artifact(f"table/{name}", "tables", name, ".csv", make_table, {"table": name},
                             table_inputs[name], CODE_TRAIN + ("size", "prune", "criteria") + CODE_SEARCH + ("export",
                                                               "report", "study:make_table"),
                             keyed=False, stage="tables"))
    graph = Graph(arts, root, data_identity=lambda: _data_identity(cfg, data_root),
                  rebuild=_rebuild_command(cfg, root))
    graph.config, graph.data_root = cfg, data_root
    return graph


def _data_identity(cfg: StudyConfig, data_root) -> dict:
    from .data import dataset_identity

    ident = dataset_identity(cfg.dataset, data_root)
    return {**ident, "image_size": cfg.image_size} if cfg.image_size else ident


def load_study_data(preset=False, data_root=None, device=None):
    """The study's train / validation / test splits (on ``device`` when given)."""
    from .data import load_splits

    cfg = load_preset(preset)
    extra = {"image_size": cfg.image_size, "workers": cfg.workers} if cfg.dataset == "imagenet" else {}
    splits = load_splits(cfg.dataset, root=data_root, val_size=cfg.val_size, batch_size=128, seed=0,
                         limit=cfg.limit, **extra)
    return splits.to(device) if device is not None else splits


def _device(graph: Graph):
    from .device import resolve_device

    return resolve_device(graph.config.device)


def _splits(graph: Graph):
    if getattr(graph, "_splits", None) is None:
        graph._splits = load_study_data(graph.config, graph.data_root, _device(graph))
    return graph._splits


# --------------------------------------------------------------------------- readers
def load_base(kind: str, preset=False, root=None, graph: Graph | None = None):
    """``(model, payload)`` of a base model; a clear error if it is missing, stale or corrupt."""
    graph = graph or study_graph(preset, root)
    return load_checkpoint(graph.resolve(f"base/{kind}"), expected_arch=graph.config.arch)


def read_json(id: str, preset=False, root=None, graph: Graph | None = None):
    graph = graph or study_graph(preset, root)
    return json.loads(graph.resolve(id).read_text())


# --------------------------------------------------------------------------- stage 1: base models
def make_base(graph: Graph, art: Artifact, path: Path):
    from .train import train_model

    cfg = TrainConfig(**art.config)
    if art.inputs:
        cfg.init_from = str(graph.resolve(art.inputs[0]))
    print(f"[train] {path.name}")
    c = graph.config
    loader = {"image_size": c.image_size, "workers": c.workers} if c.dataset == "imagenet" else {}
    train_model(cfg, out=str(path), data_root=graph.data_root, progress=graph.progress, device=c.device,
                loader_options=loader)


def make_objective(model, splits, cfg: StudyConfig, criterion: str = "redundancy", finetune_steps: int = 0,
                   seed: int = 0):
    from .objective import PruneObjective

    name, options = CRITERION_VARIANTS[criterion]
    return PruneObjective(model, splits, name, criterion_options=options, finetune_steps=finetune_steps,
                          finetune_lr=cfg.ablation.finetune_lr, seed=seed, bn_batches=cfg.evaluation.bn_batches,
                          val_images=cfg.evaluation.val_images)


# --------------------------------------------------------------------------- stage 2: ablation
def _check_ablation_row(row: dict) -> str | None:
    need = {"model": str, "criterion": str, "ratio": (int, float), "seed": int, "stage": str, "val_acc": (int, float)}
    for k, t in need.items():
        if not isinstance(row.get(k), t):
            return f"no valid {k}"
    return None


def make_ablation(graph: Graph, art: Artifact, path: Path):
    """Every criterion at the uniform ratios, after BN re-estimation (and a short fine-tune at
    one ratio), on both quantized models; validation accuracy, one row per run."""
    from tqdm.auto import tqdm

    cfg = graph.config
    a = cfg.ablation
    partial = path.with_suffix(".partial.jsonl")
    done = read_records(partial, _check_ablation_row) if partial.exists() else []
    seen = {(r["model"], r["criterion"], r["ratio"], r["seed"], r["stage"]) for r in done}
    jobs = []
    for kind in QUANT_KINDS:
        for crit in a.criteria:
            for seed in (a.random_seeds if crit == "random" else [0]):
                jobs += [(kind, crit, r, seed, "bn") for r in a.ratios]
                jobs.append((kind, crit, a.finetune_ratio, seed, "finetune"))
    todo = [j for j in jobs if j not in seen]
    models = {k: load_base(k, graph=graph)[0].to(_device(graph)) for k in QUANT_KINDS}
    splits = _splits(graph)
    for kind, crit, ratio, seed, stage in tqdm(todo, desc="ablation", disable=not graph.progress):
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
    wanted = set(jobs)
    rows = [r for r in done if (r["model"], r["criterion"], r["ratio"], r["seed"], r["stage"]) in wanted]
    df = pd.DataFrame(rows)
    df["unpruned_size_bytes"] = df["model"].map({k: model_size_bytes(m) for k, m in models.items()})
    tmp = path.with_suffix(".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)
    write_json_atomic(path.with_suffix(".meta.json"), {"config": art.config, "versions": environment_info()})


# --------------------------------------------------------------------------- stage 3: searches
def make_search(graph: Graph, art: Artifact, path: Path):
    from .prune import prunable_layers
    from .search import SearchConfig, SizeModel, search_ratios

    job, c = art.config["job"], art.config
    model, _ = load_base(job["model"], graph=graph)
    model.to(_device(graph))
    layers = prunable_layers(model)
    sc = SearchConfig(layers=layers, method=job["method"], mode=job["mode"], target=job["target"] or 0.0,
                      r_max=c["r_max"], budget=c["budget"], n_init=c["n_init"], q=c["q"], seed=job["seed"],
                      ref_accuracy=0.0 if job["mode"] == "pareto" else None, extra={"study": c})
    objective = make_objective(model, _splits(graph), graph.config, c["criterion"], 0, job["seed"])
    print(f"[search] {path.name}")
    search_ratios(objective, SizeModel.from_model(model, layers), sc, journal=path, progress=graph.progress,
                  scheduler=_dask_client(graph))


def _dask_client(graph: Graph):
    """The Dask client of the study's searches (None: they evaluate in this process); one cluster
    serves every search of a run and is closed at its end (:func:`run_study`)."""
    s = graph.config.search
    if s.scheduler is None:
        return None
    if getattr(graph, "_dask", None) is None:
        from .cluster import connect

        graph._dask = connect(s.scheduler, s.workers)
    return graph._dask[0]


def _close_dask(graph: Graph):
    client, cluster = getattr(graph, "_dask", None) or (None, None)
    if cluster is not None:
        client.close()
        cluster.close()
    graph._dask = None


# --------------------------------------------------------------------------- stage 4: fine-tune finals
def chosen_ratios(graph: Graph, art: Artifact) -> dict:
    """The ratios a final model starts from: the best feasible evaluation over all seeds'
    searches of its method (BO: the best configuration found; uniform: its one evaluation)."""
    from .search import best_feasible, load_journal

    found = []
    for sid in art.inputs[1:]:
        header, evals = load_journal(graph.resolve(sid))
        found.append((best_feasible(evals), header["config"]["layers"]))
    best, layers = max(found, key=lambda bl: bl[0]["value"])  # the first search wins a tie
    return dict(zip(layers, best["ratios"]))


def _final_training(cfg: StudyConfig) -> dict:
    """What a final model's fine-tune depends on (its key): the length and the learning rate."""
    return {"epochs": cfg.final.epochs, "lr": cfg.final.lr}


def finetune_pruned(graph: Graph, base: torch.nn.Module, ratios: dict, criterion: str, epochs: float, lr: float,
                    seed: int):
    """``base`` (left unchanged) pruned at ``ratios`` with ``criterion``, BatchNorm re-estimated, then
    fine-tuned (Adam, cosine, no weight decay; ``seed`` draws the batches): ``(pruned model, metrics)``."""
    from .prune import prune, recalibrate_batchnorm
    from .train import train

    cfg = graph.config
    splits = _splits(graph)
    crit, options = CRITERION_VARIANTS[criterion]
    pruned = prune(base, ratios, crit, criterion_options=options)
    recalibrate_batchnorm(pruned, splits.train_eval, cfg.evaluation.bn_batches)  # the same for every seed
    before = evaluate(pruned, splits.val)["acc"]
    tc = TrainConfig(epochs=epochs, optimizer="adam", lr=lr, weight_decay=0.0, seed=seed)
    t0 = time.time()
    history = train(pruned, splits, tc, progress=graph.progress)
    return pruned, {"val_acc_before_finetune": before, "val_acc": evaluate(pruned, splits.val)["acc"],
                    "size_bytes": model_size_bytes(pruned), "ratios": ratios, "history": history,
                    "seconds": time.time() - t0}


def make_final(graph: Graph, art: Artifact, path: Path):
    from .distributed import describe, is_main
    from .export import save_packed

    job, f = art.config["job"], art.config["final"]
    ratios = chosen_ratios(graph, art)
    print(f"[finetune] {path.name}")
    base, _ = load_base(job["model"], graph=graph)
    pruned, metrics = finetune_pruned(graph, base.to(_device(graph)), ratios, art.config["criterion"], f["epochs"],
                                      f["lr"], job["seed"])
    if is_main():  # under torchrun every rank fine-tunes, rank 0 writes
        save_packed(path, pruned, config={"job": job, "final": art.config, "metrics": metrics,
                                          "versions": environment_info(), "distributed": describe()})


def make_recovery(graph: Graph, art: Artifact, path: Path):
    """The recovery curve: one configuration (the uniform ratio that meets the target) fine-tuned
    for each length, each with its own cosine schedule as a final model's; validation and test top-1."""
    from .prune import prunable_layers
    from .search import SearchConfig, SizeModel, uniform_ratio

    c = art.config
    model, _ = load_base(c["model"], graph=graph)
    model.to(_device(graph))
    layers = prunable_layers(model)
    sc = SearchConfig(layers=layers, method="uniform", target=c["target"], r_max=c["r_max"], budget=1)
    ratio = uniform_ratio(sc, SizeModel.from_model(model, layers))
    splits = _splits(graph)
    rows = []
    for epochs in c["epochs"]:
        print(f"[recovery] {c['model']} uniform {ratio:.3f}, {epochs} epochs")
        pruned, m = finetune_pruned(graph, model, dict.fromkeys(layers, ratio), c["criterion"], epochs, c["lr"],
                                    c["seed"])
        rows.append({"epochs": epochs, "steps": m["history"][-1]["steps"], "val_acc_before": m["val_acc_before_finetune"],
                     "val_acc": m["val_acc"], "test_acc": evaluate(pruned, splits.test)["acc"],
                     "seconds": m["seconds"]})
    base = evaluate(model, splits.val)["acc"], evaluate(model, splits.test)["acc"]
    write_json_atomic(path, {"model": c["model"], "target": c["target"], "ratio": ratio, "lr": c["lr"],
                             "base_val_acc": base[0], "base_test_acc": base[1], "runs": rows,
                             "versions": environment_info()})


# --------------------------------------------------------------------------- stage 5: evaluate
def make_test_metrics(graph: Graph, art: Artifact, path: Path):
    """Test top-1 of every base and final model, with sizes and packed-file sizes."""
    import tempfile

    from tqdm.auto import tqdm

    from .export import load_packed, save_packed

    splits = _splits(graph)
    out = {"base": {}, "final": {}, "versions": environment_info()}
    for i in tqdm(art.inputs, desc="test metrics", disable=not graph.progress):
        p = graph.resolve(i)
        if i.startswith("base/"):
            model, payload = load_checkpoint(p)
            model.to(_device(graph))
            with tempfile.TemporaryDirectory() as tmp:
                disk = save_packed(Path(tmp) / "m.qrpk", model).stat().st_size if getattr(model, "quant_config", None) else None
            out["base"][i.split("/")[1]] = {
                "test_acc": evaluate(model, splits.test)["acc"], "val_acc": payload["metrics"].get("val_acc"),
                "size_bytes": model_size_bytes(model), "file_bytes": disk,
                "params": sum(t.numel() for t in model.parameters()), "epochs": payload["config"]["epochs"],
                "train_seconds": payload["metrics"].get("train_seconds")}
        else:
            model, header = load_packed(p)
            model.to(_device(graph))
            out["final"][i] = {"job": graph[i].config["job"], "test_acc": evaluate(model, splits.test)["acc"],
                               "size_bytes": model_size_bytes(model), "file_bytes": p.stat().st_size,
                               "val_acc": header["config"]["metrics"]["val_acc"]}
    write_json_atomic(path, out)


def make_gp_slice(graph: Graph, art: Artifact, path: Path):
    """Posterior mean and std of a GP fitted to one search's evaluations, over two layers'
    ratios with the others held at the best point (notebook 4 draws it)."""
    from .search import fit_gp, load_journal

    header, evals = load_journal(graph.resolve(art.inputs[0]))
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
def make_table(graph: Graph, art: Artifact, path: Path):
    name = art.config["table"]
    df, note, fmt = report.TABLE_MAKERS[name](graph)
    report.write_table(df, path, note=note, floatfmt=fmt)


# --------------------------------------------------------------------------- driver
def run_study(stages=STAGES, preset=False, root=None, data_root=None, progress: bool = True, smoke=None) -> Path:
    """Build every artifact of ``stages`` that is not fresh (or legacy), in order; log the times."""
    from .errors import check_writable_dir

    if smoke is not None:
        preset = smoke
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(map(repr, unknown))}; accepted values: {', '.join(STAGES)}")
    check_writable_dir(results_dir(root), "results folder")
    graph = study_graph(preset, root, data_root)
    if distributed.init_from_env(graph.config.device):
        others = [s for s in stages if s not in DISTRIBUTED_STAGES]
        if others:
            raise BadInput(f"under torchrun the study runs its training stages only ({', '.join(DISTRIBUTED_STAGES)}); "
                           f"run {', '.join(others)} in one process (python -m qrepro study --stages "
                           f"{' '.join(others)}; searches scale out with --scheduler)")
    graph.progress = progress
    graph.data_identity()  # a bad data root fails here, before any work
    times = {}
    try:
        if "search" in stages and not all(graph.done(i) for i in graph.ids("search")):
            _dask_client(graph)  # an unreachable scheduler fails here, before any work
        for stage in STAGES:
            if stage not in stages:
                continue
            t0 = time.time()
            for id in graph.ids(stage):
                graph.build(id)
            times[stage] = time.time() - t0
            print(f"[stage {stage}] {times[stage]:.0f} s")
    finally:
        _close_dask(graph)
    log = results_dir(root) / f"study-{graph.config.name}.json"
    previous = json.loads(log.read_text()) if log.exists() else {}
    runs = previous.get("runs", []) + [{"stages": list(stages), "seconds": times, "finished": time.ctime(),
                                        "versions": environment_info()}]
    write_json_atomic(log, {"settings": graph.config.to_dict(), "runs": runs})
    return log


def status_lines(preset=False, root=None, data_root=None, graph: Graph | None = None) -> tuple[list[str], int]:
    """One line per artifact and the exit code: 1 when anything is stale, missing, in progress or corrupt."""
    graph = graph or study_graph(preset, root, data_root)
    report_ = graph.report()
    root_ = graph.root
    lines = [s.line(root_) for s in report_]
    counts = {}
    for s in report_:
        counts[s.state] = counts.get(s.state, 0) + 1
    orphans = graph.orphans()
    lines.append(f"study {graph.config.name!r} in {root_}: " +
                 ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) +
                 (f"; {len(orphans)} older versions (status --remove-orphans deletes them)" if orphans else ""))
    bad = any(not s.usable for s in report_)
    if bad:
        first = next(s for s in report_ if not s.usable)
        lines.append(f"rebuild with: {graph.rebuild(graph[first.id].stage).replace('--stages ' + graph[first.id].stage, '')}"
                     .rstrip())
    return lines, int(bad)
