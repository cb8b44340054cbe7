"""The paper's presets: they validate, and their code paths run end to end at a tiny scale
(``--limit``) on data the tests write in each format (CIFAR-10 batch files, an ImageNet
ImageFolder of JPEGs)."""
import pytest
from fakes import write_fake_cifar10, write_fake_imagefolder

from qrepro import study
from qrepro.config import load_study
from qrepro.journal import load_journal


@pytest.mark.parametrize("name, dataset, arch", [("cifar10-resnet20", "cifar10", "resnet20"),
                                                  ("imagenet-resnet18", "imagenet", "resnet18")])
def test_paper_presets_validate(name, dataset, arch):
    cfg = load_study(name)
    assert (cfg.dataset, cfg.arch) == (dataset, arch)
    assert cfg.search.targets["bnn"][0] == 0.2612 and 0.5 in cfg.search.targets["dorefa"]
    small = cfg.shrunk(128)
    assert small.limit == 128 and small.search.budget == 4 and all(b["epochs"] <= 1 for b in small.base.values())


def test_device_is_not_part_of_any_key(tmp_path):
    import dataclasses

    cfg = load_study("smoke")
    a = study.study_graph(cfg, tmp_path)
    b = study.study_graph(dataclasses.replace(cfg, device="cpu"), tmp_path)
    assert all(a.key(i) == b.key(i) for i in ("base/fp", "ablation", "table/paper_table"))


def check_study(cfg, root, data):
    study.run_study(preset=cfg, root=root, data_root=data, progress=False)
    g = study.study_graph(cfg, root, data)
    assert all(s.state == "fresh" for s in g.report()), [s.line(root) for s in g.report() if s.state != "fresh"]
    _, evals = load_journal(g.resolve("search/bnn-constrained-bo-t0.2612-s0"))
    assert len(evals) == 4 and all(0 <= e["value"] <= 100 for e in evals)
    assert (root / "tables" / "paper_table.csv").exists()


@pytest.mark.slow
def test_cifar10_preset_runs_end_to_end_at_a_tiny_scale(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    # torchvision checks the md5 of the real files; these are tiny stand-ins in the same format
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)
    write_fake_cifar10(tmp_path / "data")
    check_study(load_study("cifar10-resnet20").shrunk(128), tmp_path / "results", tmp_path / "data")


@pytest.mark.slow
def test_imagenet_preset_runs_end_to_end_at_a_tiny_scale(tmp_path):
    write_fake_imagefolder(tmp_path / "data")
    check_study(load_study("imagenet-resnet18").shrunk(128, image_size=32), tmp_path / "results", tmp_path / "data")
