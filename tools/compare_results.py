"""Compare two results folders of one study preset artifact by artifact, ignoring what a rerun may
change without changing a result: wall times, timestamps, versions, keys and the paths they name.

    python tools/compare_results.py OLD NEW [--preset smoke]

A maintainer's check that a restructuring computes the same thing (before ``status --carry-forward``):
checkpoints are compared weight by weight and metric by metric (bitwise), journals record by
record, tables cell by cell.  Prints one line per artifact (``same`` or what differs); exit 1 if any
artifact differs or is missing on either side.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from the source tree

from qrepro.export import load_packed

# wall times and what follows from them (throughput; a packed file's header records its seconds, so its
# size moves by a few bytes), and records of where and when
VOLATILE = {"seconds", "train_seconds", "images_per_s", "file_bytes", "file_MB", "written", "finished", "versions",
            "key", "path", "init_from", "distributed",
            # checksums and format versions: how a file is verified, not what it holds
            "sha256", "state_sha256", "record_sha256", "blob_sha256", "header_sha256", "format_version", "version"}


def _clean(obj):
    """``obj`` without volatile fields, at any depth."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return "nan"  # NaN equals NaN here: an empty cell is the same empty cell
    return obj


def _state_diff(a: dict, b: dict) -> str | None:
    if a.keys() != b.keys():
        return "different tensors"
    bad = [k for k in a if not (torch.is_tensor(a[k]) and torch.equal(a[k], b[k]))
           and (torch.is_tensor(a[k]) or a[k] != b[k])]
    return f"tensors differ: {bad[:3]}" if bad else None


def _read(path: Path):
    if path.suffix == ".pt":
        d = torch.load(path, map_location="cpu", weights_only=False)
        return d.get("state_dict") or d.get("model"), _clean({k: v for k, v in d.items()
                                                              if k not in ("state_dict", "model")})
    if path.suffix == ".qrpk":
        model, header = load_packed(path, trust_unverified=True)  # either side may predate the checksums
        return model.state_dict(), _clean(header)
    if path.suffix == ".jsonl":
        return None, [_clean(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".json":
        return None, _clean(json.loads(path.read_text()))
    if path.suffix == ".csv":
        df = pd.read_csv(path)
        return None, _clean(df.drop(columns=[c for c in df.columns if c in VOLATILE or c.endswith("minutes")])
                            .to_dict("list"))
    return None, path.read_bytes()


def compare(old: Path, new: Path) -> list[tuple[str, str]]:
    """``(id, verdict)`` per artifact recorded in either manifest."""
    files = {}
    for side, root in (("old", old), ("new", new)):
        for rel, e in json.loads((root / "manifest.json").read_text())["artifacts"].items():
            files.setdefault(e["id"], {})[side] = root / rel
    out = []
    for id, sides in sorted(files.items()):
        if len(sides) < 2:
            out.append((id, f"only in {next(iter(sides))}"))
            continue
        (sa, ca), (sb, cb) = _read(sides["old"]), _read(sides["new"])
        why = _state_diff(sa, sb) if sa is not None else None
        if why is None and ca != cb:
            why = "content differs"
        out.append((id, why or "same"))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    args = p.parse_args(argv)
    rows = compare(args.old, args.new)
    for id, verdict in rows:
        print(f"{verdict:<20} {id}")
    differ = [i for i, v in rows if v != "same"]
    print(f"{len(rows) - len(differ)} of {len(rows)} artifacts the same" + (f"; differ: {differ}" if differ else ""))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
