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
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
