"""How far 1 and 2 torchrun processes (gloo, CPU) end apart after 3 SGD steps on the same global
batches, in float32 and float64: the largest difference of any weight or BatchNorm statistic
(tests/test_distributed.py's driver; docs/speed.md, section torchrun).

    PYTHONPATH=. python benchmarks/bench_torchrun.py
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.test_distributed import DRIVER, max_diff, torchrun  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def main():
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "driver.py"
        script.write_text(DRIVER)
        print("| dtype | scheme | largest difference, 1 against 2 processes |\n|---|---|---|")
        for dtype in ("float32", "float64"):
            for scheme in ("fp", "bnn", "dorefa"):
                out = {n: Path(tmp) / f"{n}-{scheme}-{dtype}.pt" for n in ("one", "two")}
                args = [scheme, "3", "32", dtype]
                subprocess.run([sys.executable, str(script), str(out["one"]), *args], env=ENV, check=True,
                               capture_output=True)
                subprocess.run(torchrun(2, str(script), str(out["two"]), *args), env=ENV, check=True,
                               capture_output=True)
                one, two = (torch.load(out[n], weights_only=True)["state"] for n in ("one", "two"))
                print(f"| {dtype} | {scheme} | {max_diff(one, two):.2g} |", flush=True)


if __name__ == "__main__":
    main()
