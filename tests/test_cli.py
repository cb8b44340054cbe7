"""The command line on the synthetic dataset: train a checkpoint, then search its ratios."""
import json

import pytest

from qrepro.checkpoint import load_checkpoint
from qrepro.cli import main


def test_train_then_search(tmp_path, capsys):
    ckpt = tmp_path / "bnn.pt"
    assert main(["train", "--dataset", "synthetic", "--scheme", "bnn", "--epochs", "1", "--optimizer", "adam",
                 "--lr", "0.001", "--batch-size", "32", "--max-steps", "2", "--out", str(ckpt)]) == 0
    model, payload = load_checkpoint(ckpt, expected_quant={"scheme": "bnn"})
    assert payload["config"]["dataset"] == "synthetic" and 0 <= payload["metrics"]["test_acc"] <= 100
    config = {"checkpoint": str(ckpt), "dataset": "synthetic", "method": "bo", "budget": 3, "n_init": 2,
              "target": 0.2, "bn_batches": 1, "val_images": 32, "num_restarts": 2, "raw_samples": 32,
              "journal": str(tmp_path / "j.jsonl"), "summary": str(tmp_path / "s.json")}
    (tmp_path / "search.json").write_text(json.dumps(config))
    assert main(["search", "--config", str(tmp_path / "search.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["evaluations"] == 3
    assert summary["best"]["size_bytes"] <= (1 - 0.2) * summary["unpruned_size_bytes"]
    assert len((tmp_path / "j.jsonl").read_text().splitlines()) == 1 + 2 * 3  # header, pending + eval each


def test_search_config_errors(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"checkpoint": "x.pt", "budgett": 3}))
    with pytest.raises(SystemExit, match="unknown keys.*budgett"):
        main(["search", "--config", str(tmp_path / "bad.json")])
    (tmp_path / "nock.json").write_text(json.dumps({"budget": 3}))
    with pytest.raises(SystemExit, match="checkpoint"):
        main(["search", "--config", str(tmp_path / "nock.json")])
