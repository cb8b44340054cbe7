"""Checkpoint round trip and the errors for corrupt, foreign, mismatched and unverifiable files."""
import hashlib
import json

import pytest
import torch

from qrepro.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from qrepro.models import build_model
from qrepro.quantize import quantize_model


def make(scheme="bnn"):
    return quantize_model(build_model("resnet20", num_classes=10, in_channels=1), scheme, w_bits=2 if scheme ==
                          "dorefa" else None, a_bits=2 if scheme == "dorefa" else None)


@pytest.mark.parametrize("scheme", ["bnn", "dorefa"])
def test_round_trip_same_logits(tmp_path, scheme):
    model = make(scheme).eval()
    x = torch.randn(4, 1, 28, 28)
    path = save_checkpoint(tmp_path / "m.pt", model, config={"seed": 3}, metrics={"val_acc": 50.0})
    loaded, payload = load_checkpoint(path, expected_arch="resnet20", expected_quant={"scheme": scheme})
    assert torch.equal(loaded(x), model(x))
    assert payload["config"] == {"seed": 3} and payload["metrics"]["val_acc"] == 50.0
    assert payload["versions"]["torch"] == torch.__version__.split("+")[0] or payload["versions"]["torch"]


def test_truncated_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", make())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="m.pt.*truncated, corrupt"):
        load_checkpoint(path)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a qrepro checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_mismatched_architecture_and_quantization(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", make("bnn"))
    with pytest.raises(CheckpointError, match="resnet18 was expected"):
        load_checkpoint(path, expected_arch="resnet18")
    with pytest.raises(CheckpointError, match="quantization differs"):
        load_checkpoint(path, expected_quant={"scheme": "dorefa"})
    # weights that do not fit the recorded architecture
    payload = torch.load(path, weights_only=True)
    payload["arch"] = {"name": "resnet20", "kwargs": {"num_classes": 10, "in_channels": 3}}
    torch.save(reseal(payload), tmp_path / "bad.pt")  # a consistent file whose weights do not fit
    with pytest.raises(CheckpointError, match="do not match the architecture"):
        load_checkpoint(tmp_path / "bad.pt")


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "qrepro-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "evil.pt")


def reseal(payload: dict) -> dict:
    """``payload`` with its record checksum recomputed by hand: SHA-256 of the JSON (sorted keys, no
    spaces) of everything but the weights and the checksums."""
    records = {k: v for k, v in payload.items() if k not in ("state_dict", "state_sha256", "record_sha256")}
    text = json.dumps(records, sort_keys=True, separators=(",", ":"))
    return {**payload, "record_sha256": hashlib.sha256(text.encode()).hexdigest()}


def test_the_record_checksum_is_sha256_of_the_canonical_records(tmp_path):
    payload = torch.load(save_checkpoint(tmp_path / "m.pt", make(), metrics={"val_acc": 50.0, "lr": 1e-3}),
                         weights_only=True)
    assert payload["record_sha256"] == reseal(payload)["record_sha256"]


@pytest.mark.parametrize("edit", ["metrics", "config", "negated weights without state_sha256",
                                  "no record_sha256", "format 1"])
def test_an_edited_or_unverifiable_checkpoint_is_refused_unless_trusted(tmp_path, edit):
    """The audit's cases: edited metrics or config, a removed checksum field with weights negated, an
    older format; each refused with one line, and loaded with trust_unverified only where nothing
    contradicts a checksum still present."""
    model = make()
    path = save_checkpoint(tmp_path / "m.pt", model, config={"seed": 3}, metrics={"val_acc": 50.0})
    p = torch.load(path, weights_only=True)
    if edit == "metrics":
        p["metrics"]["val_acc"] = 99.0
    elif edit == "config":
        p["config"]["seed"] = 4
    elif edit == "negated weights without state_sha256":
        del p["state_sha256"]
        p["state_dict"] = {k: -v if v.is_floating_point() else v for k, v in p["state_dict"].items()}
    elif edit == "no record_sha256":
        del p["record_sha256"]
    else:
        p["format_version"] = 1
        del p["record_sha256"]
    torch.save(p, path)
    expected = "do not match their checksum" if edit in ("metrics", "config") else "cannot be verified"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)
    if expected == "cannot be verified":
        loaded, payload = load_checkpoint(path, trust_unverified=True)
        if edit.startswith("negated"):
            assert torch.equal(loaded.conv1.weight, -model.conv1.weight)  # trusted: loaded as it is
    else:
        with pytest.raises(CheckpointError, match="do not match their checksum"):
            load_checkpoint(path, trust_unverified=True)  # a checksum present is always checked
