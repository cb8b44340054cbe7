"""Command line: ``python -m qrepro {train,search,study,status,reproduce,teach} ...`` (``--help`` on each).

Options come from the same dataclasses as the configs (:mod:`qrepro.config`), so they never
drift apart.  Errors: one line on stderr saying what is wrong, where and how to fix it;
exit code 2 for bad input, 1 for a run that failed; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
import typing
from dataclasses import field
from pathlib import Path

from .cache import write_text_atomic
from .checkpoint import load_checkpoint
from .config import available_presets, check_scheduler, load_study
from .criteria import VARIANTS, CriterionError, check_options, variant
from .data import load_splits
from .device import check_device_spelling, resolve_device
from .distributed import explain_failure, launch_rank
from .errors import BadInput, check_output_file
from .notebooks import check_jobs, notebook_paths, run_notebooks
from .objective import EvaluationSettings, PruneObjective
from .precision import PrecisionCost
from .prune import prunable_layers
from .readme import sync_documents, sync_readme
from .search import SearchConfig, search_ratios
from .size import SizeModel
from .space import check_reachable
from .study import STAGES, resolve_checkpoint, run_study, status_lines, study_graph, verify_artifact_file
from .train import TrainConfig, train_model
from .validation import add_options, from_mapping, options_given, read_config_file


TRUST_HELP = ("read a checkpoint or journal that has no checksums (an older qrepro's, or a removed field); "
              "by default it is refused")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (exit 2), without the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def _run_post_init(self):
    try:  # one clear line for an unknown name or option, before any file is made
        crit, options = variant(self.criterion)
        check_options(crit, {**options, **self.criterion_options})
    except CriterionError as err:
        raise ValueError(f"criterion: {err}") from None
    if self.layers == []:
        raise ValueError("layers: an empty list searches nothing; leave it out to search every prunable layer")
    if self.finetune_steps < 0:
        raise ValueError("finetune_steps must be at least 0")
    EvaluationSettings(self.bn_batches, self.val_images)
    check_device_spelling(self.device)
    check_scheduler(self.scheduler, self.workers)


def _run_search_config(self, layers, extra) -> SearchConfig:
    """The :class:`SearchConfig` part of this run."""
    return SearchConfig(layers=layers, extra=extra, **{f.name: getattr(self, f.name) for f in _SEARCH_FIELDS})


def _fields_of(cls, skip=()) -> list:
    """``cls``'s fields as ``make_dataclass`` entries, with their defaults: never copied by hand."""
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name], field(default=f.default, metadata=f.metadata) if f.default is not dataclasses.MISSING
             else field(default_factory=f.default_factory, metadata=f.metadata))
            for f in dataclasses.fields(cls) if f.name not in skip]


_SEARCH_FIELDS = [f for f in dataclasses.fields(SearchConfig) if f.name not in ("layers", "extra")]
SearchRun = dataclasses.make_dataclass("SearchRun", [
    ("checkpoint", str, field(metadata={"help": "a .pt path, or a base model of the committed study by artifact id "
                                                "(base/bnn; smoke:base/bnn for the smoke study's)"})),
    ("dataset", str | None, field(default=None)),  # default: the dataset the checkpoint was trained on
    ("data_root", str | None, field(default=None)),
    ("criterion", str, field(default="redundancy", metadata={"choices": VARIANTS})),
    ("criterion_options", dict, field(default_factory=dict)),
    *_fields_of(EvaluationSettings),
    ("finetune_steps", int, field(default=0)),
    ("journal", str | None, field(default=None)),  # default: <config>.journal.jsonl
    ("summary", str | None, field(default=None)),  # default: <journal>.summary.json
    ("layers", list[str] | None, field(default=None)),  # default: every prunable layer
    ("device", str, field(default="auto")),
    ("scheduler", str | None, field(default=None, metadata={"help": "Dask: 'local' or tcp://host:8786"})),
    ("workers", int | None, field(default=None, metadata={"help": "local Dask cluster size"})),
    *_fields_of(SearchConfig, skip=("layers", "extra")),
], namespace={"__post_init__": _run_post_init, "search_config": _run_search_config,
              "__doc__": "A ratio search of one trained quantized checkpoint (``python -m qrepro search``): "
                         "the objective's settings, then SearchConfig's."})
SearchRun.__module__ = __name__


# --------------------------------------------------------------------------- commands
def _cmd_train(args) -> int:
    cfg = read_config_file(args.config) if args.config else {}
    cfg.update(options_given(args, TrainConfig))
    where = args.config or "train options"
    tc = from_mapping(TrainConfig, cfg, where)
    out = check_output_file(args.out, "--out")
    if out.exists() and not args.overwrite:
        raise BadInput(f"--out {out} exists; pass another path, or --overwrite to replace it")
    _, metrics = train_model(tc, out=str(out), data_root=args.data_root, max_steps=args.max_steps,
                             device=args.device, trust_unverified=args.trust_unverified,
                             loader_options={"skip_integrity_check": args.skip_integrity_check})
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    print(f"checkpoint: {out}")
    return 0


def _cmd_search(args) -> int:
    """Run one ratio search on a trained checkpoint, from a config file and/or options (options win)."""
    data = read_config_file(args.config) if args.config else {}
    data.update(options_given(args, SearchRun))
    where = args.config or "search options"
    job = from_mapping(SearchRun, data, where)
    checkpoint, verified = resolve_checkpoint(job.checkpoint, f"{where}: checkpoint")
    job.checkpoint = str(checkpoint)
    journal = Path(job.journal or Path(args.config or "search").with_suffix(".journal.jsonl"))
    summary = Path(job.summary or journal.with_suffix(".summary.json"))
    check_output_file(journal, f"{where}: journal")
    check_output_file(summary, f"{where}: summary")

    device = resolve_device(job.device)  # once for the command: a bad or absent device fails here
    model, payload = load_checkpoint(job.checkpoint, trust_unverified=verified or args.trust_unverified)
    if not payload.get("quant"):
        raise BadInput(f"{where}: checkpoint {job.checkpoint} is a full-precision model; the search prunes a "
                       "quantized one (train it with --scheme bnn or --scheme dorefa)")
    all_layers = prunable_layers(model)
    layers = job.layers or all_layers
    bad = [n for n in layers if n not in all_layers]
    if bad:
        raise BadInput(f"{where}: layers: {', '.join(map(repr, bad))} not prunable; prunable layers: "
                       f"{', '.join(all_layers)}")
    sc = job.search_config(layers, {"checkpoint": Path(job.checkpoint).name})
    trained_on = payload["config"].get("dataset")
    if job.dataset and trained_on and job.dataset != trained_on:
        raise BadInput(f"{where}: dataset {job.dataset!r}, but checkpoint {job.checkpoint} was trained on "
                       f"{trained_on!r}; leave dataset out to use {trained_on!r}")
    dataset = job.dataset or trained_on or "fashion-mnist"
    splits = load_splits(dataset, root=job.data_root, skip_integrity_check=args.skip_integrity_check)
    if sc.space == "ratios":
        size = SizeModel.from_model(model, layers)
    else:  # size and BOPs at any bit-widths: one forward at the data's image shape counts the MACs
        size = PrecisionCost.from_model(model, tuple(next(iter(splits.val))[0].shape[1:]), layers)
    check_reachable(sc, size)
    crit, options = variant(job.criterion)
    objective = PruneObjective(model, splits, crit, job.bn_batches, job.val_images, job.finetune_steps,
                               criterion_options={**options, **job.criterion_options}, device=device)
    sc.extra["objective"] = objective.describe()
    result = search_ratios(objective, size, sc, journal=journal, scheduler=job.scheduler, workers=job.workers,
                           wait=args.wait, trust_unverified=args.trust_unverified)
    best = result.best
    out = {"journal": str(journal), "evaluations": len(result.records),
           "best": None if best is None else {
               "ratios": dict(zip(layers, best["ratios"])), "val_acc": best["value"],
               "size_bytes": best["size"], "size_MB": best["size"] / 2**20,
               "pruned_percent": 100 * best["pruned_fraction"],
               **({"bits": dict(zip(layers, best["bits"])), "bops": best["bops"]} if "bits" in best else {})},
           "unpruned_size_bytes": size.base}
    write_text_atomic(summary, json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


def _preset(args):
    """The study the options name: a preset (``--smoke``: ``smoke``), shrunk by ``--limit``, on ``--device``."""
    cfg = load_study("smoke" if getattr(args, "smoke", False) else args.preset)
    if getattr(args, "limit", None) is not None:
        cfg = cfg.shrunk(args.limit)
    if getattr(args, "batch_size", None) is not None:
        cfg = cfg.with_batch_size(args.batch_size)
    if getattr(args, "skip_integrity_check", False):
        cfg = cfg.skipping_integrity_check()
    if getattr(args, "device", None):
        cfg = dataclasses.replace(cfg, device=args.device)
    if getattr(args, "scheduler", None) is not None or getattr(args, "workers", None) is not None:
        scheduler = args.scheduler or cfg.search.scheduler
        workers = args.workers if args.workers is not None else \
            (cfg.search.workers if scheduler == cfg.search.scheduler else None)
        try:
            check_scheduler(scheduler, workers)
        except ValueError as err:
            raise BadInput(f"--scheduler / --workers: {err}") from None
        cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, scheduler=scheduler, workers=workers))
    return cfg


def _cmd_study(args) -> int:
    if args.stages and args.only:
        raise BadInput("--stages and --only choose what to build two ways; give one (--only builds what it needs)")
    log = run_study(args.stages or list(STAGES), preset=_preset(args), root=args.results, data_root=args.data_root,
                    wait=args.wait, only=args.only)
    print(f"study log: {log}")
    return 0


def _cmd_status(args) -> int:
    cfg = _preset(args)
    if args.carry_forward:
        ids = study_graph(cfg, args.results, args.data_root).carry_forward(args.carry_forward)
        print(f"carried forward {len(ids)} artifacts as legacy ({args.carry_forward})")
    if args.rebuild_manifest:
        adopted, refused = study_graph(cfg, args.results, args.data_root).adopt(
            verify_artifact_file, "re-adopted by status --rebuild-manifest (key in its name, its own checksums)")
        for line in refused:
            print(f"not adopted: {line}")
        print(f"re-adopted {len(adopted)} artifacts by their keys and checksums")
    if args.remove_orphans:
        for rel in study_graph(cfg, args.results, args.data_root).remove_orphans():
            print(f"removed {rel} (an older version)")
    lines, code = status_lines(cfg, args.results, args.data_root)
    print("\n".join(lines))
    return code


def _cmd_teach(args) -> int:
    """Execute the teaching notebooks (they read only the base checkpoints of the full or smoke study)."""
    if args.results is not None and not Path(args.results).is_dir():
        raise BadInput(f"--results {args.results} does not exist; leave --results out to read results/, or build "
                       f"the study there first (python -m qrepro study --results {args.results})")
    graph = study_graph("smoke" if args.smoke else "full", args.results)
    for id in graph.ids("base"):  # before any kernel starts: a missing or damaged checkpoint says how to rebuild
        graph.resolve(id)
    # one at a time: T3 times inference, and each lesson's time is what a student sees alone
    run_notebooks(smoke=args.smoke, root=args.results, only=args.only, track="teaching", jobs=1)
    return 0


def _cmd_readme(args) -> int:
    """Splice the study's tables into the marked blocks of the documents (``--check``: only compare)."""
    changed = ({args.readme: sync_readme(args.results, args.readme, check=args.check)} if args.readme
               else sync_documents(args.results, check=args.check))
    verb = "differ from the study's tables (run python -m qrepro readme to update)" if args.check else "updated"
    for where, names in changed.items():
        print(f"{where}: {', '.join(names)} {verb}" if names else f"{where}: every table block matches the tables")
    return 1 if args.check and any(changed.values()) else 0


def _cmd_reproduce(args) -> int:
    check_jobs(args.jobs)  # before the status check: a bad option costs nothing
    names = [p.name for p in notebook_paths()]
    if args.only:
        bad = [o for o in args.only if not any(o in n for n in names)]
        if bad:
            raise BadInput(f"--only {' '.join(bad)}: no notebook matches; notebooks: {', '.join(names)}")
    cfg = _preset(args)
    lines, code = status_lines(cfg, args.results, args.data_root)
    if code:
        print("\n".join(lines), file=sys.stderr)
        print("reproduce stopped: the cache above is not complete and fresh (reproduce only reads it)",
              file=sys.stderr)
        return 1
    if cfg.name not in ("full", "smoke"):
        raise BadInput(f"the notebooks read the 'full' or the 'smoke' study, not {cfg.name!r}; "
                       "use --preset full or --smoke (status and study work with every preset)")
    run_notebooks(smoke=cfg.name == "smoke", root=args.results, only=args.only, jobs=args.jobs)
    return 0


# --------------------------------------------------------------------------- parser
SKIP_INTEGRITY_HELP = "CIFAR-10: read files that fail torchvision's MD5 check (a subset or a re-encoded copy)"


def _study_options(p, data=True):
    p.add_argument("--preset", default="full", metavar="NAME",
                   help=f"study preset: qrepro/presets/<NAME>.toml ({', '.join(available_presets())}) or a path")
    p.add_argument("--smoke", action="store_true", help="the same as --preset smoke")
    p.add_argument("--results", help="results folder (default: results/)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="the preset's code paths at a tiny scale: N training images, short schedules (smoke runs)")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="train every base model with batches of N (the preset's otherwise; a small data set needs "
                        "at least one full batch)")
    if data:
        p.add_argument("--data-root", help="folder holding the dataset (default: data/, then the system's)")
        p.add_argument("--skip-integrity-check", action="store_true", help=SKIP_INTEGRITY_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m qrepro", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train one model (options are TrainConfig's fields)")
    t.add_argument("--config", help="TOML or JSON file with TrainConfig fields (options override it)")
    t.add_argument("--out", required=True, help="checkpoint path to write")
    t.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    t.add_argument("--data-root", help="folder holding the dataset")
    t.add_argument("--skip-integrity-check", action="store_true", help=SKIP_INTEGRITY_HELP)
    t.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    t.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:<i>")
    t.add_argument("--trust-unverified", action="store_true", help=TRUST_HELP)
    add_options(t, TrainConfig, exclude=("arch_kwargs",))
    t.set_defaults(func=_cmd_train)

    s = sub.add_parser("search", help="search per-layer pruning ratios of a checkpoint (a config file and/or options)")
    s.add_argument("--config", help="TOML or JSON file with the fields below (options override it)")
    add_options(s, SearchRun)
    s.add_argument("--wait", action="store_true", help="if another search writes the journal, wait for it to finish")
    s.add_argument("--trust-unverified", action="store_true", help=TRUST_HELP)
    s.add_argument("--skip-integrity-check", action="store_true", help=SKIP_INTEGRITY_HELP)
    s.set_defaults(func=_cmd_search)

    st = sub.add_parser("study", help="build the study's artifacts (cached, resumable)")
    st.add_argument("--stages", nargs="+", choices=STAGES, metavar="STAGE",
                    help=f"stages to run, of {' '.join(STAGES)} (default: all)")
    st.add_argument("--only", nargs="+", metavar="ID",
                    help="build only the artifacts whose ids match these shell-style patterns ('trial/bnn-*-t0.5-*'; "
                         "status lists the ids), each after every input it still needs")
    st.add_argument("--device", help="auto, cpu, cuda or cuda:<i> (default: the preset's device field)")
    st.add_argument("--scheduler", metavar="ADDRESS",
                    help="evaluate search candidates on Dask: 'local' (a LocalCluster) or tcp://host:8786 "
                         "(default: the preset's search.scheduler; none: in this process)")
    st.add_argument("--workers", type=int, metavar="N",
                    help="worker processes of the local Dask cluster (default: one per GPU, else one per core)")
    st.add_argument("--wait", action="store_true",
                    help="if another study writes the results folder, wait for it to finish")
    _study_options(st)
    st.set_defaults(func=_cmd_study)

    ss = sub.add_parser("status", help="one line per artifact: fresh, legacy, stale (why), missing, corrupt")
    _study_options(ss)
    ss.add_argument("--remove-orphans", action="store_true",
                    help="delete older versions of this study's artifacts (files no current artifact resolves to)")
    ss.add_argument("--carry-forward", metavar="NOTE",
                    help="maintainers: re-record artifacts stale only by a code change shown to compute the same "
                         "(a restructuring with its equality test) as legacy, with NOTE saying which")
    ss.add_argument("--rebuild-manifest", action="store_true",
                    help="record the intact files of a lost manifest again: each file whose name holds its current "
                         "key and whose own checksums hold (legacy files cannot be: restore the manifest from git)")
    ss.set_defaults(func=_cmd_status)

    r = sub.add_parser("reproduce", help="check the cache (status), then execute the notebooks with papermill")
    _study_options(r)
    r.add_argument("--only", nargs="+", help="run only notebooks whose names contain these strings")
    r.add_argument("--jobs", type=int, help="notebooks run at once (default: one per usable CPU core)")
    r.set_defaults(func=_cmd_reproduce)

    rd = sub.add_parser("readme", help="copy the study's tables into the <!-- table: NAME --> blocks of the "
                        "README and docs")
    rd.add_argument("--results", help="results folder whose tables/ to read (default: results/)")
    rd.add_argument("--readme", help="the one Markdown file to update (default: README.md, docs/results.md, "
                    "docs/study-v2.md)")
    rd.add_argument("--check", action="store_true", help="only say which blocks differ (exit 1 if any)")
    rd.set_defaults(func=_cmd_readme)

    te = sub.add_parser("teach", help="execute the teaching notebooks (notebooks/teaching) with papermill")
    te.add_argument("--smoke", action="store_true", help="read the smoke study's base checkpoints")
    te.add_argument("--results", help="results folder (default: results/)")
    te.add_argument("--only", nargs="+", help="run only notebooks whose names contain these strings")
    te.set_defaults(func=_cmd_teach)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    if argv is None and threading.current_thread() is threading.main_thread():
        # as a program: `kill` (SIGTERM) stops a run as Ctrl-C does, keeping what was written and closing a Dask
        # cluster; and Ctrl-C works even where a shell started the run in the background with SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BadInput as err:
        if args.debug:
            raise
        if launch_rank() == 0:  # under torchrun every rank meets it: one line, not one per process
            print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; what was written is kept (rerun to resume)", file=sys.stderr)
        return 130
    except Exception as err:  # a run that failed on good input
        if args.debug:
            raise
        lost = explain_failure(err)
        if lost:  # every rank that meets it says so: rank 0 may be the one that hung
            print(f"failed: {lost}", file=sys.stderr)
        elif launch_rank() == 0:  # under torchrun every rank meets it: one line, not one per process
            print(f"failed: {type(err).__name__}: {err} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
