"""A write is done only when it is all on disk (qrepro.cache): short writes continued, failed ones
cleaned up and reported in one line naming the file and the cause, no write through a symlink, and
no artifact recorded whose write failed."""
import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qrepro import cache
from qrepro.artifacts import Artifact, Graph
from qrepro.errors import RunFailed, WriteFailed
from qrepro.journal import append_record, read_records


def _failing_write(monkeypatch, after_bytes: int, code=errno.ENOSPC):
    """os.write (as qrepro.cache calls it) writes ``after_bytes`` bytes in all, then fails with ``code``."""
    real, budget = os.write, {"left": after_bytes}

    def write(fd, data):
        if budget["left"] <= 0:
            raise OSError(code, os.strerror(code))
        n = real(fd, bytes(data[:budget["left"]]))
        budget["left"] -= n
        return n

    monkeypatch.setattr(cache.os, "write", write)


def test_short_writes_are_continued(tmp_path, monkeypatch):
    real = os.write
    monkeypatch.setattr(cache.os, "write", lambda fd, data: real(fd, bytes(data[:3])))  # 3 bytes a call
    cache.write_text_atomic(tmp_path / "a.json", '{"x": 1234567890}')
    append_record(tmp_path / "j.jsonl", {"value": 0.123456789})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1234567890}
    assert read_records(tmp_path / "j.jsonl") == [{"value": 0.123456789}]


def test_a_full_disk_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    target = tmp_path / "t.csv"
    target.write_text("old\n")
    _failing_write(monkeypatch, 4)
    with pytest.raises(WriteFailed, match=r"t\.csv: the write failed: the disk is full; the file was left as it was"):
        cache.write_text_atomic(target, "new content, longer than four bytes\n")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


@pytest.mark.parametrize("code, cause", [(errno.ENOSPC, "the disk is full"),
                                         (errno.EFBIG, r"the file-size limit \(ulimit -f\) was reached"),
                                         (errno.EROFS, "the file system is read-only")])
def test_a_failed_append_leaves_no_torn_record(tmp_path, monkeypatch, code, cause):
    journal = tmp_path / "j.jsonl"
    for i in range(3):
        append_record(journal, {"index": i})
    before = journal.read_bytes()
    _failing_write(monkeypatch, 5, code)  # part of the line goes out, then the write fails
    with pytest.raises(WriteFailed, match=f"j.jsonl: the append failed: {cause}; nothing of the record was left"):
        append_record(journal, {"index": 3, "padding": "x" * 100})
    assert journal.read_bytes() == before  # cut back: every earlier record, nothing torn


def test_the_file_size_limit_of_a_real_process(tmp_path):
    """Under ``ulimit -f`` the kernel itself cuts the write short; the append fails cleanly and the
    process exits non-zero with one line (the audit's case: exit 0 and a torn last line)."""
    journal = tmp_path / "j.jsonl"
    script = textwrap.dedent(f"""
        import resource, sys
        from qrepro.journal import append_record
        from qrepro.errors import WriteFailed
        resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))
        try:
            for i in range(100):
                append_record({str(journal)!r}, {{"index": i, "x": "y" * 20}})
        except WriteFailed as err:
            print(err, file=sys.stderr)
            sys.exit(1)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 1 and "file-size limit" in run.stderr and run.stderr.count("\n") == 1
    lines = journal.read_text().splitlines()
    assert journal.stat().st_size <= 300 and all(json.loads(line)["x"] == "y" * 20 for line in lines)
    assert journal.read_text().endswith("\n") and len(lines) == len(read_records(journal))


def test_no_write_follows_a_planted_symlink(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    results = tmp_path / "results"
    results.mkdir()
    (results / "manifest.json.tmp").symlink_to(outside)
    cache.write_text_atomic(results / "manifest.json", "{}\n")
    assert outside.read_text() == "precious\n" and (results / "manifest.json").read_text() == "{}\n"
    assert not (results / "manifest.json.tmp").exists()
    (results / "j.jsonl").symlink_to(outside)  # a journal that is a link: refused, not appended through
    with pytest.raises(WriteFailed, match="symlink"):
        append_record(results / "j.jsonl", {"index": 0})
    assert outside.read_text() == "precious\n"


def test_an_artifact_whose_manifest_record_failed_is_not_done(tmp_path, monkeypatch):
    def make(graph, art, path):
        cache.write_text_atomic(path, "A")

    g = Graph([Artifact("a", "tables", "a", ".txt", make, {}, (), ())], tmp_path, data_identity=lambda: {})
    real = cache.write_bytes_atomic

    def fail_on_manifest(path, data):
        if Path(path).name == "manifest.json":
            raise WriteFailed(f"{path}: the write failed: the disk is full")
        return real(path, data)

    monkeypatch.setattr("qrepro.artifacts.write_text_atomic", lambda p, t: fail_on_manifest(p, t.encode()))
    with pytest.raises(RunFailed, match="manifest.json: the write failed"):
        g.build("a")
    monkeypatch.undo()
    st = Graph([Artifact("a", "tables", "a", ".txt", make, {}, (), ())], tmp_path, data_identity=lambda: {}).status("a")
    assert st.state == "missing" and "no completion record" in st.detail


@pytest.mark.parametrize("name", ["../../escape", "a/b", ".hidden", ""])
def test_a_preset_name_that_is_not_a_plain_name_is_refused(tmp_path, name):
    from qrepro.config import load_study
    from qrepro.validation import ConfigError

    preset = tmp_path / "p.toml"
    smoke = Path(__file__).resolve().parent.parent / "qrepro" / "presets" / "smoke.toml"
    preset.write_text(f'name = "{name}"\n' + smoke.read_text())  # top-level keys come before the tables
    with pytest.raises(ConfigError, match="must be a plain name"):
        load_study(preset)


def test_train_does_not_overwrite_a_checkpoint_without_overwrite(tmp_path, capsys):
    from qrepro.cli import main

    out = tmp_path / "m.pt"
    out.write_bytes(b"a checkpoint someone wants")
    argv = ["train", "--dataset", "synthetic", "--epochs", "1", "--batch-size", "32", "--max-steps", "1", "--out",
            str(out)]
    assert main(argv) == 2
    assert "exists; pass another path, or --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"a checkpoint someone wants"
    assert main(argv + ["--overwrite"]) == 0 and out.read_bytes() != b"a checkpoint someone wants"


def test_size_model_names_the_prunable_layers_for_an_unknown_one():
    from qrepro.models import build_model
    from qrepro.prune import PruneError
    from qrepro.size import SizeModel

    with pytest.raises(PruneError, match="'nope.conv1' are not prunable layers of this model; its prunable layers: "
                                         "layer1.0.conv1"):
        SizeModel.from_model(build_model("resnet20", in_channels=1), ["nope.conv1"])
