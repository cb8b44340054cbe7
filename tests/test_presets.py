"""The paper's presets: they validate, and their code paths run end to end at a tiny scale
(``--limit``) on data the tests write in each format (CIFAR-10 batch files, an ImageNet
ImageFolder of JPEGs)."""
import dataclasses
import re

import pytest
from fakes import write_fake_cifar10, write_fake_imagefolder

from qrepro import study
from qrepro.cli import main
from qrepro.config import load_study
from qrepro.data import DatasetNotFound, load_splits
from qrepro.errors import BadInput
from qrepro.journal import load_journal
from qrepro.models import build_model
from qrepro.train import TrainConfig, train


@pytest.mark.parametrize("name, dataset, arch", [("cifar10-resnet20", "cifar10", "resnet20"),
                                                  ("imagenet-resnet18", "imagenet", "resnet18")])
def test_paper_presets_validate(name, dataset, arch):
    cfg = load_study(name)
    assert (cfg.dataset, cfg.arch) == (dataset, arch)
    assert cfg.search.targets["bnn"][0] == 0.2612 and 0.5 in cfg.search.targets["dorefa"]
    small = cfg.shrunk(128)
    assert small.limit == 128 and small.search.budget == 4 and all(b["epochs"] <= 1 for b in small.base.values())


def test_device_is_not_part_of_any_key(tmp_path):
    cfg = load_study("smoke")
    a = study.study_graph(cfg, tmp_path)
    b = study.study_graph(dataclasses.replace(cfg, device="cpu"), tmp_path)
    assert all(a.key(i) == b.key(i) for i in ("base/fp", "ablation", "table/paper_table"))


def check_study(cfg, root, data):
    # the joint stage's code path with two of its settings (the smoke study runs all five): the suite's time
    cfg = dataclasses.replace(cfg, joint=dataclasses.replace(cfg.joint, settings=["joint-bo", "2bit-bo"]))
    study.run_study(preset=cfg, root=root, data_root=data, progress=False)
    g = study.study_graph(cfg, root, data)
    assert all(s.state == "fresh" for s in g.report()), [s.line(root) for s in g.report() if s.state != "fresh"]
    _, evals = load_journal(g.resolve("search/bnn-constrained-bo-t0.2612-s0"))
    assert len(evals) == 4 and all(0 <= e["value"] <= 100 for e in evals)
    assert (root / "tables" / "paper_table.csv").exists()


@pytest.mark.slow
def test_cifar10_preset_runs_end_to_end_at_a_tiny_scale(tmp_path):
    write_fake_cifar10(tmp_path / "data")  # tiny stand-ins in the real format: they fail torchvision's MD5 check
    cfg = dataclasses.replace(load_study("cifar10-resnet20").shrunk(128), skip_integrity_check=True)
    check_study(cfg, tmp_path / "results", tmp_path / "data")


def test_a_small_data_set_is_named_and_every_hint_repeats_the_options_given(tmp_path, capsys):
    """The MD5 failure is named as such with its switch; --batch-size and --limit reach the study and
    its messages; status's rebuild hint repeats --limit, --batch-size, --data-root and --results."""
    write_fake_cifar10(tmp_path / "data", per_batch=40)
    with pytest.raises(DatasetNotFound, match="fails torchvision's MD5 check.*--skip-integrity-check"):
        load_splits("cifar10", root=tmp_path / "data")
    argv = ["--preset", "cifar10-resnet20", "--limit", "128", "--batch-size", "16", "--skip-integrity-check",
            "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "r")]
    assert main(["status", *argv]) == 1
    out = capsys.readouterr().out
    hint = re.search(r"rebuild with: (.*)", out)[1]
    for option in argv[2:]:
        assert option in hint, (option, hint)
    cfg = load_study("cifar10-resnet20").shrunk(128).with_batch_size(16)
    assert {b["batch_size"] for b in cfg.base.values()} == {16}


def test_too_few_images_for_one_batch_says_how_many_a_run_needs(tmp_path):
    splits = load_splits("synthetic", n_train=40, batch_size=64)
    with pytest.raises(BadInput, match=r"needs at least one full batch of 64 images, and the training split has [1-5]?[0-9];"):
        train(build_model("resnet20", in_channels=1, num_classes=4), splits, TrainConfig(batch_size=64))


@pytest.mark.slow
def test_imagenet_preset_runs_end_to_end_at_a_tiny_scale(tmp_path):
    write_fake_imagefolder(tmp_path / "data")
    check_study(load_study("imagenet-resnet18").shrunk(128, image_size=32), tmp_path / "results", tmp_path / "data")


@pytest.mark.parametrize("name, shape, classes", [("full", (1, 28, 28), 10), ("cifar10-resnet20", (3, 32, 32), 10),
                                                   ("imagenet-resnet18", (3, 224, 224), 1000)])
def test_every_joint_search_of_a_preset_can_meet_its_budget(name, shape, classes):
    """Each joint setting at each target has candidates under the budget on the preset's own network (sizes do not
    depend on the weights): a preset that asks for the unreachable fails here, not after its base models train."""
    from qrepro.jobs import joint_jobs
    from qrepro.precision import PrecisionCost
    from qrepro.prune import prunable_layers
    from qrepro.quantize import quantize_model
    from qrepro.search import SearchConfig
    from qrepro.space import check_reachable

    cfg = load_study(name)
    model = quantize_model(build_model(cfg.arch, in_channels=shape[0], num_classes=classes), "dorefa", 2, 2)
    layers = prunable_layers(model)
    cost = PrecisionCost.from_model(model, shape, layers)
    jobs = joint_jobs(cfg)
    assert {j.setting for j in jobs} == set(cfg.joint.settings)
    for job in jobs:
        check_reachable(SearchConfig(layers=layers, **job.search_fields(cfg)), cost)
