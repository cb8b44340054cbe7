"""Checkpoint round trip and the errors for corrupt, foreign and mismatched files."""
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
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="do not match the architecture"):
        load_checkpoint(tmp_path / "bad.pt")


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "qrepro-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "evil.pt")
