"""Every bad input gets one clear error naming the field and the fix, before any work, and
the command line prints it in one line (exit 2) without a traceback."""
import hashlib
import json
import zlib
from pathlib import Path

import pytest
import torch

from qrepro.checkpoint import CheckpointError, load_checkpoint
from qrepro.cli import main
from qrepro.config import load_study
from qrepro.criteria import CriterionError
from qrepro.data import DatasetNotFound, load_splits, read_idx
from qrepro.errors import BadInput
from qrepro.export import load_packed, save_packed
from qrepro.inference import InferenceError, fuse_for_inference
from qrepro.journal import load_journal
from qrepro.models import build_model
from qrepro.notebooks import check_parameters
from qrepro.prune import PruneError, apply_kept, prune
from qrepro.quantize import QuantizationError, dorefa_weight, quantize_model
from qrepro.search import SearchConfig, SearchError, search_ratios
from qrepro.size import SizeModel
from qrepro.study import run_study
from qrepro.train import TrainConfig
from qrepro.validation import ConfigError, from_mapping, read_config_file


@pytest.fixture(scope="module")
def bnn():
    torch.manual_seed(0)
    return quantize_model(build_model("resnet20", in_channels=1), "bnn")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A full-precision and a BNN checkpoint trained one step on the synthetic data."""
    d = tmp_path_factory.mktemp("ckpt")
    for name, extra in (("fp", []), ("bnn", ["--scheme", "bnn", "--optimizer", "adam", "--lr", "0.001"])):
        assert main(["train", "--dataset", "synthetic", "--epochs", "1", "--batch-size", "32", "--max-steps", "1",
                     "--out", str(d / f"{name}.pt"), *extra]) == 0
    return d


# --------------------------------------------------------------------------- API
def test_fuse_for_inference(bnn):
    with pytest.raises(InferenceError, match="needs a torch.nn.Module.*got str"):
        fuse_for_inference("model.qrpk")
    with pytest.raises(InferenceError, match="already fused for inference; fuse the model it was made from"):
        fuse_for_inference(fuse_for_inference(bnn))
    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # control flow on a tensor's value: torch.fx cannot trace it

    with pytest.raises(InferenceError, match="cannot fuse this model for inference: Branchy cannot be traced"):
        fuse_for_inference(Branchy())
    circular = build_model("resnet20", in_channels=1)
    circular.layer1[0].conv1.padding_mode = "circular"
    with pytest.raises(InferenceError, match="padding_mode 'circular' cannot be fused, only 'zeros'"):
        fuse_for_inference(circular)


@pytest.mark.parametrize("ratios, match", [
    ([0.5, 0.5], "must be a number"),
    (None, "must be a number"),
    ("0.5", "must be a number"),
    (1.5, r"must be in \[0, 1\)"),
    ({"layer9.0.conv1": 0.5}, "not prunable.*prunable layers: layer1.0.conv1"),
])
def test_prune_ratios(bnn, ratios, match):
    with pytest.raises(PruneError, match=match):
        prune(bnn, ratios)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(criterion="redundant"), PruneError, "unknown criterion 'redundant'.*registered: redundancy"),
    (dict(criterion_options={"tie_brake": "gamma"}), CriterionError,
     "no option 'tie_brake'; its options: distance, tie_break"),
    (dict(criterion="l1", criterion_options={"seed": 1}), CriterionError, "'l1' has no option 'seed'"),
    (dict(criterion_options={"tie_break": "median"}), CriterionError, "tie_break 'median'; accepted"),
    (dict(mode="blok"), PruneError, "mode 'blok'; accepted values: block, stage"),
    (dict(scales="frozn"), PruneError, "scale convention 'frozn'"),
])
def test_prune_names_and_options(bnn, kwargs, error, match):
    with pytest.raises(error, match=match):
        prune(bnn, 0.5, **kwargs)


def test_kept_indices_out_of_range(bnn):
    import copy

    with pytest.raises(PruneError, match=r"layer1.0.conv1 must be distinct indices in \[0, 16\)"):
        apply_kept(copy.deepcopy(bnn), {"layer1.0.conv1": [0, 999]})


@pytest.mark.parametrize("kwargs, match", [
    (dict(budget=2.5), "budget: expected an integer, got 2.5"),
    (dict(budget="5"), "budget: expected an integer, got '5'"),
    (dict(n_init=12, budget=10), r"n_init \(12\) must be smaller than budget"),
    (dict(method="bayes"), "unknown search method 'bayes'"),
    (dict(target=1.2), r"target .* must be in \[0, 1\)"),
    (dict(r_max=float("nan")), "r_max: expected a finite number"),
])
def test_search_config(kwargs, match):
    with pytest.raises(BadInput, match=match):
        SearchConfig(layers=["a", "b"], **kwargs)


def test_objective_returning_inf_is_refused_and_not_journaled(tmp_path):
    size = SizeModel(1000.0, {"a": 10, "b": 10}, {"a": 20.0, "b": 10.0})
    cfg = SearchConfig(layers=["a", "b"], target=0.1, budget=3, n_init=2, method="random")
    with pytest.raises(SearchError, match="returned inf.*finite number"):
        search_ratios(lambda r: float("inf"), size, cfg, journal=tmp_path / "j.jsonl", progress=False)
    assert all('"eval"' not in line for line in (tmp_path / "j.jsonl").read_text().splitlines())


@pytest.mark.parametrize("fields, match", [
    (dict(scheme="dorefa", w_bits=0), "w_bits must be an integer from 1 to 32"),
    (dict(scheme="dorefa", w_bits=33), "w_bits must be an integer from 1 to 32"),
    (dict(epochs=0), "epochs must be a positive number"),
    (dict(lr=-1), "lr must be a positive number"),
    (dict(arch="vgg16"), "arch: unknown architecture 'vgg16'; accepted values: resnet20, resnet18, or"),
    (dict(batch_size=0), "batch_size must be at least 1"),
    (dict(w_bits=2), "w_bits / a_bits need a quantization scheme"),
    (dict(scheme="xnor"), "scheme: unknown 'xnor'"),
    (dict(optimizer="rmsprop"), "optimizer: unknown 'rmsprop'"),
    (dict(epochs="3"), "epochs: expected a finite number, got '3'"),
])
def test_train_config(fields, match):
    with pytest.raises(BadInput, match=match):
        TrainConfig(**fields)


def test_quantizer_bits():
    with pytest.raises(QuantizationError, match="w_bits must be an integer from 1 to 32"):
        dorefa_weight(torch.zeros(3), 0)


def test_data_root_that_does_not_exist_is_not_replaced_by_the_system_copy(tmp_path):
    with pytest.raises(DatasetNotFound, match=f"data root {tmp_path / 'nope'} does not exist"):
        load_splits("fashion-mnist", root=tmp_path / "nope")
    with pytest.raises(BadInput, match="unknown dataset 'mnist'"):
        load_splits("mnist")


def test_half_size_gzip_idx_names_the_file(tmp_path):
    src = Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
    if not src.exists():
        pytest.skip("Fashion-MNIST not installed")
    half = tmp_path / "t10k-labels-idx1-ubyte.gz"
    half.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(DatasetNotFound, match="t10k-labels-idx1-ubyte.gz cannot be read .*truncated or corrupt"):
        read_idx(half)


def test_checkpoint_files(tmp_path, ckpts):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "junk.pt")
    payload = torch.load(ckpts / "bnn.pt", weights_only=True)
    key = next(k for k in payload["state_dict"] if k.endswith("conv1.weight"))
    payload["state_dict"][key] = payload["state_dict"][key] * -1  # an edit that keeps the format valid
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="do not match their checksum"):
        load_checkpoint(tmp_path / "edited.pt")


def test_packed_files(tmp_path, ckpts):
    model, _ = load_checkpoint(ckpts / "bnn.pt")
    path = save_packed(tmp_path / "m.qrpk", prune(model, 0.5))
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[4:8], "little")
    flipped = bytearray(raw)
    for i in range(8 + n + 10, 8 + n + 123):
        flipped[i] ^= 0xFF
    (tmp_path / "flipped.qrpk").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        load_packed(tmp_path / "flipped.qrpk")

    def with_header(edit, name, reseal=True):
        """The file with its header edited; ``reseal``: and its header checksum recomputed by hand
        (SHA-256 of the JSON with sorted keys and no spaces), as a consistent forgery would be."""
        header = json.loads(zlib.decompress(bytes(raw[8:8 + n])))
        edit(header)
        if reseal and "header_sha256" in header:
            rest = {k: v for k, v in header.items() if k != "header_sha256"}
            header["header_sha256"] = hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":"))
                                                     .encode()).hexdigest()
        head = zlib.compress(json.dumps(header).encode())
        out = tmp_path / name
        out.write_bytes(b"QRPK" + len(head).to_bytes(4, "little") + head + bytes(raw[8 + n:]))
        return out

    edited = with_header(lambda h: h["quant"].update(scheme="dorefa", weight="dorefa", w_bits=2, a_bits=2,
                                                     act="dorefa"), "edited.qrpk")
    with pytest.raises(CheckpointError, match="header was edited"):
        load_packed(edited)
    bad_index = with_header(lambda h: h["pruned"]["kept"].update({"layer1.0.conv1": [0, 999]}), "idx.qrpk")
    with pytest.raises(CheckpointError, match=r"distinct indices in \[0, 16\)"):
        load_packed(bad_index)
    config = with_header(lambda h: h["config"].update(val_acc=99.0), "config.qrpk", reseal=False)
    with pytest.raises(CheckpointError, match="header does not match its checksum"):
        load_packed(config)
    # the audit's cases: a checksum removed, the version downgraded to 1 (which had none)
    no_blob = with_header(lambda h: h.pop("blob_sha256"), "noblob.qrpk")
    old = with_header(lambda h: [h.pop("blob_sha256"), h.pop("header_sha256"), h.update(version=1)], "v1.qrpk")
    for unverified in (no_blob, old):
        with pytest.raises(CheckpointError, match="cannot be verified; pass --trust-unverified"):
            load_packed(unverified)
        assert torch.equal(load_packed(unverified, trust_unverified=True)[0].conv1.weight,
                           load_packed(path)[0].conv1.weight)


def test_journal_that_is_not_json_lines(tmp_path):
    (tmp_path / "j.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n binary")
    with pytest.raises(BadInput, match="not a qrepro search journal"):
        load_journal(tmp_path / "j.jsonl")


@pytest.mark.parametrize("override, match", [
    ({"budgett": 3}, r"unknown field\(s\) 'budgett'; accepted: name, dataset"),
    ({"search": {"budget": "60"}}, r"search.budget: expected an integer, got '60'"),
    ({"search": {"budget": 5, "n_init": 5}}, r"n_init \(5\) must be smaller than budget \(5\)"),
    ({"evaluation": {"val_images": "many"}}, "evaluation.val_images: expected an integer or none \\(leave it out\\), got 'many'"),
    ({"base": {"fp": {"epochs": 0}}}, "base.fp: epochs must be a positive number"),
    ({"ablation": {"criteria": ["redundancy", "l2"]}}, "criteria: unknown 'l2'"),
    ({"limit": 0}, "limit must be at least 1"),
    ({"search": {"targets": {"bnn": [1.5]}}}, r"targets.bnn: a size target .* in \(0, 1\)"),
    ({"search": {"scheduler": "dask-host"}}, "scheduler: 'dask-host' is neither 'local' nor an address"),
    ({"search": {"workers": 4, "scheduler": "tcp://host:8786"}},
     "workers sizes the local Dask cluster: give it with scheduler = 'local'"),
    ({"search": {"compare_criteria": ["redundancy"]}}, "compare_criteria: list other criteria than criterion"),
    ({"search": {"compare_criteria": ["bn_scale"], "compare_target": 0.3}},
     r"search.compare_target 0.3 must be one of the targets of search.targets.bnn"),
    ({"final": {"recovery_epochs": [0]}}, r"recovery_epochs must be positive"),
    ({"final": {"recovery_model": "fp"}}, r"recovery: unknown 'fp'"),
])
def test_study_preset_errors_name_the_file_and_field(tmp_path, override, match):
    import tomllib

    data = tomllib.loads((Path(__file__).resolve().parent.parent / "qrepro/presets/full.toml").read_text())

    def merge(a, b):
        for k, v in b.items():
            a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a

    p = tmp_path / "bad.json"
    p.write_text(json.dumps(merge(data, override)))
    with pytest.raises(ConfigError, match=f"{p}.*{match}"):
        load_study(p)


def test_config_files(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold one object of fields, got a list"):
        read_config_file(tmp_path / "list.json")
    with pytest.raises(ConfigError, match="no study preset 'nope'.*presets: cifar10-resnet20, fmnist-resnet18, full, "
                                          "imagenet-resnet18, smoke"):
        load_study("nope")
    with pytest.raises(ConfigError, match="where: expected a table"):
        from_mapping(TrainConfig, [1], "where")


@pytest.mark.parametrize("kwargs, expect", [
    (dict(smoke="False"), (False, None)),
    (dict(smoke="True"), (True, None)),
    (dict(smoke=False), (False, None)),
])
def test_notebook_parameters_read_papermill_strings(kwargs, expect):
    assert check_parameters(**kwargs) == expect


@pytest.mark.parametrize("kwargs, match", [
    (dict(smoke="maybe"), "smoke must be True or False"),
    (dict(smoke=1), "smoke must be True or False"),
    (dict(results=123), "results must be a folder path"),
    (dict(results="/no/such/folder"), "is not a folder"),
])
def test_notebook_parameters_errors(kwargs, match):
    with pytest.raises(BadInput, match=match):
        check_parameters(**kwargs)


def test_unknown_study_stage():
    with pytest.raises(ValueError, match="unknown stage.*'basee'.*accepted values: base, ablation"):
        run_study(["basee"], preset="smoke")


# --------------------------------------------------------------------------- command line
def run_cli(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code, err, match, expected=2):
    assert code == expected, err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert __import__("re").search(match, lines[0]), lines[0]


@pytest.mark.parametrize("argv, match", [
    (["--w-bits", "0", "--scheme", "dorefa"], "w_bits must be an integer from 1 to 32"),
    (["--w-bits", "33", "--scheme", "dorefa"], "w_bits must be an integer from 1 to 32"),
    (["--epochs", "0"], "epochs must be a positive number"),
    (["--lr", "-1"], "lr must be a positive number"),
    (["--arch", "vgg16"], "arch: unknown architecture 'vgg16'"),
    (["--batch-size", "0"], "batch_size must be at least 1"),
    (["--epochs", "abc"], "--epochs takes a number, got 'abc'"),
    (["--scheme", "bnn", "--init-from", "/no/such.pt"], "init_from checkpoint /no/such.pt does not exist"),
    (["--dataset", "fashion-mnist", "--data-root", "/no/such/dir"], "data root /no/such/dir does not exist"),
    (["--weight-decay", "-1"], "weight_decay must be 0 or more"),
])
def test_cli_train(capsys, tmp_path, argv, match):
    code, _, err = run_cli(capsys, ["train", "--dataset", "synthetic", "--out", str(tmp_path / "m.pt"), *argv])
    assert_one_line(code, err, match)


def test_cli_train_files(capsys, tmp_path, ckpts):
    (tmp_path / "plain").write_text("")
    code, _, err = run_cli(capsys, ["train", "--dataset", "synthetic", "--out", str(tmp_path / "plain" / "m.pt")])
    assert_one_line(code, err, "is a file, not a folder")
    code, _, err = run_cli(capsys, ["train", "--dataset", "synthetic", "--scheme", "bnn", "--out",
                                    str(tmp_path / "m.pt"), "--init-from", str(ckpts / "bnn.pt")])
    assert_one_line(code, err, r"is a quantized \(bnn\) checkpoint; a quantized model starts from a full-precision")


def search_config(tmp_path, ckpts, **fields):
    cfg = {"checkpoint": str(ckpts / "bnn.pt"), "dataset": "synthetic", "budget": 3, "n_init": 2, "bn_batches": 1,
           "val_images": 32, "journal": str(tmp_path / "j.jsonl"), **fields}
    p = tmp_path / "search.json"
    p.write_text(json.dumps(cfg))
    return str(p)


@pytest.mark.parametrize("fields, match", [
    (dict(val_images="many"), r"search.json: val_images: expected an integer or none \(leave it out\), got 'many'"),
    (dict(budgett=3), r"unknown field\(s\) 'budgett'"),
    (dict(budget=2.5), "budget: expected an integer, got 2.5"),
    (dict(layers=["nope"]), "layers: 'nope' not prunable; prunable layers: layer1.0.conv1"),
    (dict(criterion="norm"), "criterion: unknown criterion 'norm'; accepted values: redundancy"),
    (dict(target=0.99), "target 0.9900 cannot be reached"),
    (dict(n_init=5), r"n_init \(5\) must be smaller than budget \(3\)"),
    (dict(scheduler="local", workers=0), "workers must be at least 1"),
    (dict(scheduler="tcp://127.0.0.1:9"), r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"),
])
def test_cli_search_config(capsys, tmp_path, ckpts, fields, match):
    code, _, err = run_cli(capsys, ["search", "--config", search_config(tmp_path, ckpts, **fields)])
    assert_one_line(code, err, match)
    assert not (tmp_path / "j.jsonl").exists()  # nothing started


def test_cli_search_files(capsys, tmp_path, ckpts):
    code, _, err = run_cli(capsys, ["search", "--config", search_config(tmp_path, ckpts,
                                                                         checkpoint=str(ckpts / "fp.pt"))])
    assert_one_line(code, err, "is a full-precision model; the search prunes a quantized one")
    (tmp_path / "plain").write_text("")
    code, _, err = run_cli(capsys, ["search", "--config", search_config(tmp_path, ckpts,
                                                                         summary=str(tmp_path / "plain" / "s.json"))])
    assert_one_line(code, err, "summary .* is a file, not a folder")
    (tmp_path / "list.json").write_text("[1]")
    code, _, err = run_cli(capsys, ["search", "--config", str(tmp_path / "list.json")])
    assert_one_line(code, err, "must hold one object of fields, got a list")
    (tmp_path / "j.jsonl").write_bytes(b"\x00\xff binary, not a journal")
    code, _, err = run_cli(capsys, ["search", "--config", search_config(tmp_path, ckpts)])
    assert_one_line(code, err, "j.jsonl holds binary data, not JSON lines")
    assert (tmp_path / "j.jsonl").read_bytes() == b"\x00\xff binary, not a journal"  # untouched


def test_cli_late_errors_now_come_first(capsys, tmp_path, ckpts):
    """The audit's cases, each one line (exit 2) before any file is made: a journal field naming a
    checkpoint (was: 3,560 warnings and a 4.45 MB side file), a dataset other than the checkpoint's
    (was: a search at chance accuracy), a validation split larger than the training set, a teach on
    a results folder that does not exist (was: a failure after a kernel start)."""
    before = (ckpts / "bnn.pt").read_bytes()
    code, _, err = run_cli(capsys, ["search", "--config", search_config(tmp_path, ckpts,
                                                                         journal=str(ckpts / "bnn.pt"))])
    assert_one_line(code, err, "bnn.pt holds binary data, not JSON lines \\(is it a checkpoint\\?\\)")
    assert (ckpts / "bnn.pt").read_bytes() == before and not list(ckpts.glob("*rejected*"))
    code, _, err = run_cli(capsys, ["search", "--config", search_config(tmp_path, ckpts, dataset="fashion-mnist")])
    assert_one_line(code, err, "dataset 'fashion-mnist', but checkpoint .*bnn.pt was trained on 'synthetic'")
    assert not (tmp_path / "j.jsonl").exists()
    code, _, err = run_cli(capsys, ["train", "--dataset", "fashion-mnist", "--val-size", "70000", "--epochs", "1",
                                    "--out", str(tmp_path / "m.pt")])
    assert_one_line(code, err, r"val_size 70000: the training set has 60000 images, so val_size must be in \[0, 60000\)")
    assert not list(tmp_path.glob("m.pt*"))
    code, _, err = run_cli(capsys, ["teach", "--results", str(tmp_path / "nope")])
    assert_one_line(code, err, "--results .*nope does not exist")
    code, _, err = run_cli(capsys, ["teach", "--smoke", "--results", str(tmp_path)])
    assert_one_line(code, err, "base-fp-.*missing.*rebuild with: python -m qrepro study --preset smoke --stages base")
    assert not (tmp_path / "notebooks").exists()


@pytest.mark.parametrize("argv, match", [
    (["study", "--stages", "basee"], "argument --stages: invalid choice: 'basee'"),
    (["study", "--preset", "nope"], "no study preset 'nope'"),
    (["study", "--scheduler", "host:8786"], "--scheduler / --workers: scheduler: 'host:8786' is neither"),
    (["study", "--workers", "0", "--scheduler", "local"], "workers must be at least 1"),
    (["reproduce", "--only", "zzz"], "--only zzz: no notebook matches; notebooks: 01_quantizers.py"),
    (["reproduce", "--jobs", "0"], "--jobs must be a positive number of notebooks run at once, got 0"),
    (["status", "--data-root", "/no/such/dir"], "data root /no/such/dir does not exist"),
    (["train"], "the following arguments are required: --out"),
])
def test_cli_study_commands(capsys, argv, match):
    code, _, err = run_cli(capsys, argv)
    assert_one_line(code, err, match)


def test_cli_results_under_a_file(capsys, tmp_path):
    (tmp_path / "plain").write_text("")
    code, _, err = run_cli(capsys, ["study", "--preset", "smoke", "--results", str(tmp_path / "plain" / "r")])
    assert_one_line(code, err, "results folder .* is a file, not a folder")


def test_debug_shows_the_traceback(capsys, tmp_path):
    with pytest.raises(BadInput):
        main(["--debug", "train", "--dataset", "synthetic", "--epochs", "0", "--out", str(tmp_path / "m.pt")])


def test_cli_corrupt_idx_file_under_the_data_root(capsys, tmp_path):
    src = Path("/usr/share/datasets/fashion-mnist")
    if not src.exists():
        pytest.skip("Fashion-MNIST not installed")
    for f in src.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:200])  # cut short
    code, _, err = run_cli(capsys, ["train", "--dataset", "fashion-mnist", "--data-root", str(tmp_path),
                                    "--out", str(tmp_path / "m.pt"), "--max-steps", "1"])
    assert_one_line(code, err, "train-labels-idx1-ubyte.gz cannot be read .*truncated or corrupt")


def test_a_study_missing_an_input_is_refused_before_a_cluster_starts(tmp_path, monkeypatch):
    """--stages search on an empty results folder: the missing base model is named before any work, and
    no Dask cluster is started for searches that could not run."""
    from qrepro import study

    started = []
    monkeypatch.setattr(study.Study, "dask_client", lambda self: started.append(1))
    with pytest.raises(BadInput, match=r"search/.* needs base/(bnn|dorefa), which is missing .*build it first: "
                                       r"python -m qrepro study --preset smoke --stages base"):
        study.run_study(["search"], preset="smoke", root=tmp_path, progress=False)
    assert not started and not list(tmp_path.rglob("*.pt"))
