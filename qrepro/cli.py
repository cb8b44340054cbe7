"""Command line: ``python -m qrepro {train,search,study} ...`` (``--help`` on each)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _load_config(path: str | None) -> dict:
    if path is None:
        return {}
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"config file {p} does not exist")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise SystemExit(f"config file {p} is not valid JSON: {err}")


def _cmd_train(args) -> int:
    from .train import TrainConfig, train_model

    cfg = _load_config(args.config)
    for key in ("arch", "dataset", "scheme", "w_bits", "a_bits", "epochs", "optimizer", "lr", "seed", "init_from",
                "limit", "batch_size"):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    try:
        tc = TrainConfig(**cfg)
    except TypeError as err:
        raise SystemExit(f"bad training config: {err}; fields: {', '.join(TrainConfig.__dataclass_fields__)}")
    _, metrics = train_model(tc, out=args.out, data_root=args.data_root, max_steps=args.max_steps)
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    print(f"checkpoint: {args.out}")
    return 0


def _cmd_search(args) -> int:
    """Run one ratio search on a trained checkpoint, from a JSON config."""
    from .checkpoint import load_checkpoint
    from .data import load_splits
    from .objective import PruneObjective
    from .prune import prunable_layers
    from .search import SearchConfig, SizeModel, search_ratios

    cfg = _load_config(args.config)
    known = {"checkpoint", "dataset", "data_root", "criterion", "criterion_options", "bn_batches", "val_images",
             "finetune_steps", "journal", "summary", "layers"} | set(SearchConfig.__dataclass_fields__)
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise SystemExit(f"unknown keys in {args.config}: {', '.join(unknown)}; accepted: {', '.join(sorted(known))}")
    if "checkpoint" not in cfg:
        raise SystemExit(f"{args.config} must name the trained quantized model: \"checkpoint\": \"path.pt\"")
    model, payload = load_checkpoint(cfg["checkpoint"])
    dataset = cfg.get("dataset", payload["config"].get("dataset", "fashion-mnist"))
    splits = load_splits(dataset, root=cfg.get("data_root"))
    objective = PruneObjective(model, splits, cfg.get("criterion", "redundancy"), cfg.get("bn_batches", 20),
                               cfg.get("val_images"), cfg.get("finetune_steps", 0),
                               criterion_options=cfg.get("criterion_options"))
    layers = cfg.get("layers") or prunable_layers(model)
    fields = {k: v for k, v in cfg.items() if k in SearchConfig.__dataclass_fields__ and k != "layers"}
    fields["extra"] = {"checkpoint": Path(cfg["checkpoint"]).name, "objective": objective.describe()}
    try:
        sc = SearchConfig(layers=layers, **fields)
        size = SizeModel.from_model(model, layers)
        journal = cfg.get("journal", str(Path(args.config).with_suffix(".journal.jsonl")))
        result = search_ratios(objective, size, sc, journal=journal)
    except ValueError as err:
        raise SystemExit(f"search: {err}")
    best = result.best
    summary = {"journal": journal, "evaluations": len(result.records),
               "best": None if best is None else {
                   "ratios": dict(zip(layers, best["ratios"])), "val_acc": best["value"],
                   "size_bytes": best["size"], "size_MB": best["size"] / 2**20,
                   "pruned_percent": 100 * best["pruned_fraction"]},
               "unpruned_size_bytes": size.base}
    out = cfg.get("summary", str(Path(journal).with_suffix(".summary.json")))
    Path(out).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_study(args) -> int:
    from .study import STAGES, run_study

    stages = args.stages or list(STAGES)
    log = run_study(stages, smoke=args.smoke, root=args.results, data_root=args.data_root)
    print(f"study log: {log}")
    return 0


def _cmd_reproduce(args) -> int:
    from .notebooks import run_notebooks

    run_notebooks(smoke=args.smoke, root=args.results, only=args.only)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qrepro", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one model from a JSON config (flags override it)")
    t.add_argument("--config", help="JSON file with TrainConfig fields")
    t.add_argument("--out", required=True, help="checkpoint path to write")
    t.add_argument("--data-root", help="folder holding the dataset")
    t.add_argument("--arch")
    t.add_argument("--dataset")
    t.add_argument("--scheme", choices=["bnn", "dorefa"])
    t.add_argument("--w-bits", type=int)
    t.add_argument("--a-bits", type=int)
    t.add_argument("--epochs", type=float)
    t.add_argument("--optimizer", choices=["sgd", "adam"])
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--init-from", help="full-precision checkpoint to start a quantized model from")
    t.add_argument("--limit", type=int, help="use only this many training images")
    t.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    t.set_defaults(func=_cmd_train)

    s = sub.add_parser("search", help="search per-layer pruning ratios of a checkpoint (JSON config)")
    s.add_argument("--config", required=True, help="JSON: checkpoint, target, method, budget, seed, journal, ...")
    s.set_defaults(func=_cmd_search)

    st = sub.add_parser("study", help="run the study's computing stages (cached, resumable)")
    st.add_argument("--stages", nargs="+", help="base ablation search final (default: all)")
    st.add_argument("--smoke", action="store_true", help="tiny scale, minutes on 2 CPU cores")
    st.add_argument("--results", help="results folder (default: results/)")
    st.add_argument("--data-root", help="folder holding the dataset")
    st.set_defaults(func=_cmd_study)

    r = sub.add_parser("reproduce", help="execute the numbered notebooks with papermill (reads the cache)")
    r.add_argument("--smoke", action="store_true", help="read the smoke study's cache")
    r.add_argument("--results", help="results folder (default: results/)")
    r.add_argument("--only", nargs="+", help="run only notebooks whose names contain these strings")
    r.set_defaults(func=_cmd_reproduce)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
