"""The command line on the synthetic dataset: train a checkpoint, then search its ratios."""
import inspect
import json
from pathlib import Path

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
    assert main(["search", "--config", str(tmp_path / "bad.json")]) == 2
    (tmp_path / "nock.json").write_text(json.dumps({"budget": 3}))
    assert main(["search", "--config", str(tmp_path / "nock.json")]) == 2


def test_train_options_are_generated_from_every_scalar_field():
    import dataclasses

    from qrepro.cli import build_parser
    from qrepro.train import TrainConfig

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    flags = {s for a in sub._actions for s in a.option_strings}
    fields = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig) if f.name != "arch_kwargs"}
    assert fields <= flags, fields - flags
    assert {"--weight-decay", "--momentum", "--scaling", "--warmup-epochs", "--val-size"} <= flags


def test_train_options_override_the_config_file(tmp_path):
    from qrepro.cli import build_parser
    from qrepro.train import TrainConfig
    from qrepro.validation import from_mapping, options_given, read_config_file

    (tmp_path / "t.toml").write_text('epochs = 2\nlr = 0.5\nweight_decay = 0.001\n')
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "t.toml"), "--out", "x.pt", "--lr", "0.2",
                                      "--momentum", "0.8"])
    cfg = {**read_config_file(args.config), **options_given(args, TrainConfig)}
    tc = from_mapping(TrainConfig, cfg)
    assert (tc.epochs, tc.lr, tc.weight_decay, tc.momentum) == (2.0, 0.2, 0.001, 0.8)


def test_search_run_carries_every_search_config_and_evaluation_field_with_its_one_default():
    import dataclasses

    from qrepro.cli import SearchRun
    from qrepro.config import SearchSettings
    from qrepro.objective import EvaluationSettings, PruneObjective
    from qrepro.search import SearchConfig

    run = {f.name: f.default for f in dataclasses.fields(SearchRun)}
    for f in dataclasses.fields(SearchConfig):
        if f.name not in ("layers", "extra"):
            assert f.name in run and run[f.name] == f.default, f.name
    study = {f.name: f.default for f in dataclasses.fields(SearchSettings)}
    for name in ("budget", "n_init", "q", "r_max"):  # the study's searches: the same defaults
        assert study[name] == run[name], name
    objective = inspect.signature(PruneObjective).parameters
    for f in dataclasses.fields(EvaluationSettings):
        assert run[f.name] == f.default == objective[f.name].default, f.name


def test_the_readme_search_example_runs_as_written(tmp_path, capsys):
    """configs/search-example.json names its checkpoint by artifact id (base/bnn), so it survives every
    rebuild of the study; the README's command, at a small budget and with its outputs in tmp_path."""
    example = Path(__file__).resolve().parent.parent / "configs" / "search-example.json"
    assert json.loads(example.read_text())["checkpoint"] == "base/bnn"
    assert main(["search", "--config", str(example), "--budget", "3", "--n-init", "2",
                 "--val-images", "64", "--bn-batches", "1", "--journal", str(tmp_path / "j.jsonl"),
                 "--summary", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["evaluations"] == 3


def test_the_readme_joint_search_command_runs_as_written(tmp_path, capsys):
    """The README's joint-search command on the committed any-precision model, at a small budget: every
    evaluation under the size budget, with its bit-widths in the summary."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    command = "python -m qrepro search --checkpoint base/anyprec --space joint --target 0.2612 --budget 40"
    assert command in readme
    args = command.split()[3:-2] + ["--budget", "3", "--n-init", "2", "--val-images", "64", "--bn-batches", "1",
                                    "--journal", str(tmp_path / "j.jsonl"), "--summary", str(tmp_path / "s.json")]
    assert main(args) == 0
    best = json.loads((tmp_path / "s.json").read_text())["best"]
    assert set(best["bits"].values()) <= {1, 2, 4, 8} and best["pruned_percent"] >= 26.12 - 1e-9
    assert all(json.loads(line)["feasible"] for line in (tmp_path / "j.jsonl").read_text().splitlines()[1:]
               if json.loads(line)["type"] == "eval")


def test_search_takes_every_field_as_an_option_and_names_criteria_as_presets_do(tmp_path, capsys):
    """No config file needed; a criterion variant (redundancy-gm) works as in a preset; a typo in an option
    or an empty layer list is refused before any file is made."""
    common = ["search", "--checkpoint", "base/bnn", "--budget", "2", "--n-init", "1", "--val-images", "64",
              "--bn-batches", "1", "--journal", str(tmp_path / "j.jsonl"), "--summary", str(tmp_path / "s.json")]
    assert main(common + ["--criterion", "redundancy-gm"]) == 0
    journal = json.loads((tmp_path / "j.jsonl").read_text().splitlines()[0])
    assert journal["config"]["extra"]["objective"]["criterion_options"] == {"tie_break": "geometric_median"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"checkpoint": "base/bnn", "criterion_options": {"tie_brake": "gamma"},
                               "journal": str(tmp_path / "new.jsonl")}))
    assert main(["search", "--config", str(bad)]) == 2
    assert "tie_brake" in capsys.readouterr().err and not (tmp_path / "new.jsonl").exists()
    bad.write_text(json.dumps({"checkpoint": "base/bnn", "layers": [], "journal": str(tmp_path / "new.jsonl")}))
    assert main(["search", "--config", str(bad)]) == 2
    assert "empty list" in capsys.readouterr().err and not (tmp_path / "new.jsonl").exists()
    assert main(["search", "--checkpoint", "base/nope"]) == 2
    assert "base/fp, base/bnn, base/dorefa" in capsys.readouterr().err
