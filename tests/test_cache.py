"""Cache keys change when an input that determines the artifact changes, and not otherwise."""
import dataclasses

import pytest

from qrepro import study
from qrepro.cache import StaleArtifact, config_key, require


def test_key_ignores_order_and_int_float_spelling():
    assert config_key({"a": 1, "b": [1, 2]}) == config_key({"b": [1, 2], "a": 1.0})
    assert config_key({"a": 1}) != config_key({"a": 2})
    assert config_key({"a": [1, 2]}) != config_key({"a": [2, 1]})
    assert config_key({"a": {"x": None}}) != config_key({"a": {"x": 0}})


def test_every_training_field_changes_the_base_key():
    cfg = study.base_config("fp", smoke=True)
    base = config_key(cfg.to_dict())
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        other = {int: lambda v: v + 1, float: lambda v: v * 2 + 1, str: lambda v: v + "x",
                 type(None): lambda v: 7, dict: lambda v: {**v, "extra": 1}}[type(value)](value)
        changed = dataclasses.replace(cfg, **{f.name: other}) if f.name != "optimizer" else None
        if changed is not None:
            assert config_key(changed.to_dict()) != base, f.name


def test_downstream_keys_follow_their_inputs(monkeypatch):
    bnn_before = study.base_checkpoint_path("bnn", smoke=True).name
    abl_before = study.ablation_path(smoke=True).name
    job = study.search_jobs(True)[0]
    search_before = study.search_journal_path(job, smoke=True).name
    final_before = study.final_path(study.final_jobs(True)[0], smoke=True).name
    # unchanged settings: the same names
    assert study.base_checkpoint_path("bnn", smoke=True).name == bnn_before
    # one epoch more for the full-precision model changes everything downstream of it
    smoke = study.study_settings(True)
    smoke["base"]["fp"]["epochs"] = 2
    monkeypatch.setattr(study, "SMOKE", smoke)
    assert study.base_checkpoint_path("bnn", smoke=True).name != bnn_before
    assert study.ablation_path(smoke=True).name != abl_before
    assert study.search_journal_path(job, smoke=True).name != search_before
    assert study.final_path(study.final_jobs(True)[0], smoke=True).name != final_before


def test_search_settings_change_only_search_and_final_keys(monkeypatch):
    job = study.search_jobs(True)[0]
    before = (study.base_checkpoint_path("bnn", smoke=True).name, study.ablation_path(smoke=True).name,
              study.search_journal_path(job, smoke=True).name)
    smoke = study.study_settings(True)
    smoke["search"]["budget"] = 5
    monkeypatch.setattr(study, "SMOKE", smoke)
    after = (study.base_checkpoint_path("bnn", smoke=True).name, study.ablation_path(smoke=True).name,
             study.search_journal_path(job, smoke=True).name)
    assert after[:2] == before[:2] and after[2] != before[2]


def test_missing_artifact_names_the_command(tmp_path):
    with pytest.raises(StaleArtifact, match=r"python -m qrepro study --stages base --smoke"):
        study.load_base("bnn", smoke=True, root=tmp_path)
    (tmp_path / "checkpoints").mkdir()
    stale = study.base_checkpoint_path("bnn", smoke=True, root=tmp_path).with_name("base-bnn-000000000000.pt")
    stale.write_bytes(b"old")
    with pytest.raises(StaleArtifact, match="other inputs: base-bnn-000000000000.pt"):
        require(study.base_checkpoint_path("bnn", smoke=True, root=tmp_path), "make study")
