"""Data-parallel training under torchrun (gloo, 2 CPU processes) against one process on the same
global batch, and a killed training run resumed from its last saved state."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from qrepro.distributed import collective_timeout
from qrepro.errors import BadInput

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

DRIVER = """
import sys, torch
from qrepro.data import load_splits
from qrepro.distributed import init_from_env, is_main, world_size
from qrepro.models import build_model
from qrepro.quantize import quantize_model
from qrepro.train import TrainConfig, train

init_from_env("cpu")
out, scheme, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
splits = load_splits("synthetic", batch_size=32, seed=0, image_size=int(sys.argv[4]))
torch.manual_seed(0)
model = build_model("resnet20", num_classes=splits.num_classes, in_channels=splits.in_channels)
if scheme == "fp":
    cfg = TrainConfig(dataset="synthetic", batch_size=32, lr=0.05, epochs=1, seed=0)
else:
    model = quantize_model(model, scheme, w_bits=2 if scheme == "dorefa" else None,
                           a_bits=2 if scheme == "dorefa" else None)
    # SGD, not the study's Adam: Adam's first step is lr * sign(g), so a gradient that is zero up to
    # rounding (1e-17 in one run, -1e-17 in the other) moves a weight by +lr or -lr
    cfg = TrainConfig(dataset="synthetic", batch_size=32, scheme=scheme, lr=0.05, epochs=1, seed=0,
                      w_bits=2 if scheme == "dorefa" else None, a_bits=2 if scheme == "dorefa" else None)
model = model.to(getattr(torch, sys.argv[5]))  # float64: the comparison sees the algorithm, not float32 rounding
train(model, splits, cfg, progress=False, eval_every_epoch=False, max_steps=steps)
if is_main():
    torch.save({"state": model.state_dict(), "world_size": world_size()}, out)
"""


def torchrun(n: int, *args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", *args]


def run(cmd, cwd, **kw):
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300, check=False, **kw)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("scheme", ["fp", "bnn", "dorefa"])
def test_two_gloo_processes_equal_one_process_on_the_same_global_batch(tmp_path, scheme):
    """Each rank takes half of every global batch of 32, BatchNorm sees the global batch, DDP
    averages the gradients: 3 steps of SGD with momentum give the parameters and running statistics
    of one process, to 1e-9 in float64.  32-pixel images: on 8-pixel ones the last stage is 2 x 2 and
    a quantized channel is often constant over the batch, so BatchNorm centres it to +-1e-17 or 0
    and a sign / ReLU tie is broken by rounding, differently in each summation order."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    run([sys.executable, str(script), str(tmp_path / "one.pt"), scheme, "3", "32", "float64"], tmp_path)
    run(torchrun(2, str(script), str(tmp_path / "two.pt"), scheme, "3", "32", "float64"), tmp_path)
    one, two = (torch.load(tmp_path / f, weights_only=True) for f in ("one.pt", "two.pt"))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert max_diff(one["state"], two["state"]) < 1e-9


def test_torchrun_train_command_writes_one_checkpoint_recording_the_world_size(tmp_path):
    """The real command line: rank 0 alone writes and prints, the checkpoint says how it was trained,
    and with --dtype float64 one and two processes end with the same weights (to 1e-9)."""
    common = ["-m", "qrepro", "train", "--dataset", "synthetic", "--batch-size", "32", "--max-steps", "2",
              "--lr", "0.05", "--device", "cpu", "--dtype", "float64"]
    run([sys.executable, *common, "--out", "one.pt"], tmp_path)
    proc = run(torchrun(2, *common, "--out", "two.pt"), tmp_path)
    assert proc.stdout.count("checkpoint: two.pt") == 1  # rank 1 prints nothing
    one, two = (torch.load(tmp_path / f, weights_only=True) for f in ("one.pt", "two.pt"))
    assert two["extra"]["distributed"] == {"world_size": 2, "backend": "gloo", "batch_norm": "global"}
    assert one["extra"]["distributed"]["world_size"] == 1
    assert one["state_dict"]["conv1.weight"].dtype == torch.float64
    assert max_diff(one["state_dict"], two["state_dict"]) < 1e-9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.pt", "two.pt"]  # no state or probe files left


def test_bad_input_under_torchrun_is_reported_once(tmp_path):
    """Every rank meets the same bad input; only rank 0 prints its line (torchrun adds its own report)."""
    cmd = torchrun(2, "-m", "qrepro", "train", "--dataset", "synthetic", "--epochs", "0", "--device", "cpu",
                   "--out", "x.pt")
    proc = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "epochs" in lines[0], proc.stderr[-3000:]


def test_killed_training_resumes_from_its_last_epoch_and_ends_as_the_uninterrupted_run(tmp_path):
    cmd = [sys.executable, "-m", "qrepro", "train", "--dataset", "synthetic", "--batch-size", "32", "--epochs", "6",
           "--device", "cpu"]
    run([*cmd, "--out", "whole.pt"], tmp_path)
    state = tmp_path / "cut.pt.train-state"
    proc = subprocess.Popen([*cmd, "--out", "cut.pt"], cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert state.exists() and not (tmp_path / "cut.pt").exists(), "the run ended before it could be killed"
    resumed = run([*cmd, "--out", "cut.pt"], tmp_path)
    assert "resumed from" in resumed.stdout + resumed.stderr
    whole, cut = (torch.load(tmp_path / f, weights_only=True) for f in ("whole.pt", "cut.pt"))
    assert max_diff(whole["state_dict"], cut["state_dict"]) == 0
    assert len(cut["metrics"]["history"]) == 6
    assert not state.exists()  # the checkpoint supersedes it
    # a state from another run is refused in one line, and left alone
    state.write_bytes(b"")
    torch.save({"key": {"config": {}}, "step": 1}, state)
    bad = subprocess.run([*cmd[:-2], "--epochs", "5", "--device", "cpu", "--out", "cut.pt", "--overwrite"],
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 2 and "belongs to another run" in bad.stderr, bad.stderr[-2000:]
    assert json.dumps(torch.load(state, weights_only=True)) == json.dumps({"key": {"config": {}}, "step": 1})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_kill_or_ctrl_c_ends_a_background_run_as_an_interrupt_keeping_its_state(tmp_path, sig):
    """`kill` (SIGTERM), and Ctrl-C in a run whose shell started it with SIGINT ignored (`nohup cmd &`), stop it
    as KeyboardInterrupt does: one line, exit code 130, the last epoch's state kept for the resume."""
    cmd = [sys.executable, "-m", "qrepro", "train", "--dataset", "synthetic", "--batch-size", "32", "--epochs", "500",
           "--device", "cpu", "--out", "long.pt"]
    state = tmp_path / "long.pt.train-state"
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "interrupted; what was written is kept (rerun to resume)"
    assert state.exists() and not (tmp_path / "long.pt").exists()


HANG = """
import sys, time
from qrepro import distributed
distributed.init_from_env("cpu")
if distributed.rank() == 1:
    time.sleep(120)  # a hung rank
try:
    distributed.barrier()
except Exception as err:
    print(distributed.explain_failure(err), file=sys.stderr)
    sys.exit(1)
"""


def test_a_hung_rank_stops_the_others_after_the_collective_timeout_with_the_cause(tmp_path):
    """torch's default would keep rank 0 waiting 30 minutes; with QREPRO_COLLECTIVE_TIMEOUT=3 it stops
    within seconds and says why and what sets the limit."""
    script = tmp_path / "hang.py"
    script.write_text(HANG)
    t0 = time.time()
    proc = subprocess.run(torchrun(2, str(script)), cwd=tmp_path, env={**ENV, "QREPRO_COLLECTIVE_TIMEOUT": "3"},
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0 and time.time() - t0 < 90
    assert "another process is hung or gone" in proc.stderr and "waits 3 s (QREPRO_COLLECTIVE_TIMEOUT" in proc.stderr


def test_a_bad_collective_timeout_is_one_line(monkeypatch):
    monkeypatch.setenv("QREPRO_COLLECTIVE_TIMEOUT", "soon")
    with pytest.raises(BadInput, match="QREPRO_COLLECTIVE_TIMEOUT='soon': give a positive number of seconds"):
        collective_timeout()
