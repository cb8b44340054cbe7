"""The artifact graph: every cached result, what it is made from, its key and its digest.

An :class:`Artifact` is one file made by one function from its config and its inputs.
Its **key** hashes four components (showyourwork and DVC track the same things):

* ``config``: the settings that determine it (canonical JSON, see :mod:`qrepro.cache`);
* ``inputs``: the keys of the artifacts it reads;
* ``data``: the identity of the dataset it reads (name and the SHA-256 of its files'
  content, :func:`qrepro.data.dataset_identity`), for artifacts that read data;
* ``code``: a fingerprint of the source it depends on -- whole ``qrepro`` modules
  (``"criteria"``) or single functions (``"study:make_ablation"``), as a normalized syntax
  tree, so comments and docstrings do not count and any change of code does.  The list is
  computed (:func:`code_closure`) from what the artifact's maker references, never written by hand.

**One completion rule**: an artifact exists once its final atomic write has happened and
:meth:`Graph.record` has written its SHA-256 into ``results/manifest.json``.  A file with
no manifest record is unfinished (a journal in progress is the only resumable state).
Reading an artifact (:meth:`Graph.resolve`) checks its digest: a swapped, edited,
truncated or corrupted file is refused with the file, what is wrong and the command that
rebuilds it.  :meth:`Graph.status` says, per artifact, ``fresh``, ``legacy`` (made before
code fingerprints existed, by this config, data and inputs), ``stale`` (and which
component changed), ``missing``, ``in progress`` or ``corrupt``.
"""
from __future__ import annotations

import ast
import fnmatch
import functools
import glob
import hashlib
import importlib
import inspect
import json
import os
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .cache import KEY_LENGTH, config_key, write_text_atomic
from .distributed import barrier, is_main
from .errors import BadInput
from .lock import hold
from .paths import manifest_path, results_dir

MANIFEST_FORMAT = 1
USABLE = ("fresh", "legacy")


class ArtifactError(BadInput, FileNotFoundError):
    """An artifact that cannot be read: missing, stale or corrupt (the message says which and how to rebuild)."""


# --------------------------------------------------------------------------- fingerprints
def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def source_fingerprint(source: str) -> str:
    """SHA-256 of the syntax tree of ``source`` without docstrings (comments never reach the tree)."""
    tree = _strip_docstrings(ast.parse(textwrap.dedent(source)))
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()[:KEY_LENGTH]


@functools.lru_cache(maxsize=None)
def code_fingerprint(spec: str) -> str:
    """Fingerprint of ``"module"`` or ``"module:name"`` inside the ``qrepro`` package (a name: a
    top-level function, class or assigned constant)."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        return source_fingerprint(inspect.getsource(importlib.import_module(f"qrepro.{module_name}")))
    tree = _strip_docstrings(ast.Module(body=[_top_level(module_name)[1][attr]], type_ignores=[]))
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()[:KEY_LENGTH]


def _module_tree(module: str) -> ast.Module:
    return ast.parse(inspect.getsource(importlib.import_module(f"qrepro.{module}")))


@functools.lru_cache(maxsize=None)
def _top_level(module: str) -> tuple[dict, dict]:
    """``module``'s top-level names: ``{name: qrepro module it was imported from}`` and
    ``{name: its definition node}`` (functions, classes and assigned constants)."""
    imported, defined = {}, {}
    for node in _module_tree(module).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            for alias in node.names:
                target = node.module.split(".")[0] if node.module else alias.name  # ``from . import x``: module x
                imported[alias.asname or alias.name] = target
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                if isinstance(target, ast.Name):
                    defined[target.id] = node
    return imported, defined


def _referenced(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _module_closure(modules: set[str]) -> set[str]:
    """``modules`` and every ``qrepro`` module they import, transitively (imports are at the top
    of every module, tests/test_imports.py)."""
    seen, todo = set(), list(modules)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(set(_top_level(m)[0].values()))
    return seen


def code_closure(*functions: Callable, exempt=()) -> tuple[str, ...]:
    """The code specs ``functions`` run: each function (``"module:name"``), the functions and
    classes of its module it names (annotations included, so a context object's methods count),
    transitively, and every ``qrepro`` module those name, with everything those modules import;
    minus the ``exempt`` modules (bookkeeping that never changes an artifact's content)."""
    specs, modules = set(), set()
    todo = [(f.__module__.split(".")[-1], f.__name__) for f in functions]
    while todo:
        module, name = todo.pop()
        if f"{module}:{name}" in specs:
            continue
        specs.add(f"{module}:{name}")
        imported, defined = _top_level(module)
        for ref in _referenced(defined[name]):
            if ref in defined:
                todo.append((module, ref))
            elif ref in imported:
                modules.add(imported[ref])
    modules = _module_closure(modules)
    own = {s.partition(":")[0] for s in specs}
    return tuple(sorted(specs | {m for m in modules if m not in exempt and m not in own}))


# --------------------------------------------------------------------------- graph
@dataclass
class Artifact:
    """One cached file.  ``keyed``: the key is in the file name, so versions never overwrite
    each other (checkpoints, journals); otherwise one stable, diffable file (tables)."""

    id: str
    folder: str
    stem: str
    suffix: str
    make: Callable | None = None  # make(context, artifact, path): writes ``path`` (atomically)
    config: dict = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    code: tuple[str, ...] = ()
    data: bool = False
    keyed: bool = True
    stage: str = ""
    resumable: bool = False
    partial: str = ""  # a resumable artifact's finished part lives in <stem>-<key><partial> (else in its own file)


@dataclass
class Status:
    id: str
    state: str  # fresh, legacy, stale, missing, in progress, corrupt
    path: Path
    detail: str = ""

    @property
    def usable(self) -> bool:
        return self.state in USABLE

    def line(self, root: Path) -> str:
        try:
            shown = self.path.relative_to(root)
        except ValueError:
            shown = self.path
        return f"{self.state:<11} {self.id:<44} {shown}" + (f"  ({self.detail})" if self.detail else "")


class Graph:
    """The artifacts of one study under one results folder.

    ``data_identity``: a callable returning the dataset's identity (computed once, and only
    if an artifact that reads data needs its key); ``rebuild``: the command that makes the
    artifacts of a stage (``rebuild("search")``), named in every error.
    """

    def __init__(self, artifacts: list[Artifact], root=None, data_identity: Callable[[], dict] | None = None,
                 rebuild: Callable[..., str] = lambda stage=None: "python -m qrepro study"
                 + ("" if stage is None else f" --stages {stage}"),
                 study: str | None = None):
        self.artifacts = {a.id: a for a in artifacts}
        self.study = study  # recorded in every entry: studies sharing a results folder share artifact ids
        if len(self.artifacts) != len(artifacts):
            raise ValueError("artifact ids must be unique")
        self.root = results_dir(root)
        self._data_identity = data_identity
        self._data = None
        self.rebuild = rebuild
        self._components: dict[str, dict] = {}
        self._status: dict[str, Status] = {}
        self._digests: dict[Path, tuple[float, int, str]] = {}
        for a in artifacts:  # pin the fingerprints of the code this process runs (edits made later are not it)
            for c in a.code:
                code_fingerprint(c)

    def __getitem__(self, id: str) -> Artifact:
        if id not in self.artifacts:
            raise KeyError(f"no artifact {id!r} in this study")
        return self.artifacts[id]

    def ids(self, stage: str | None = None) -> list[str]:
        return [i for i, a in self.artifacts.items() if stage is None or a.stage == stage]

    # ----------------------------------------------------------------- keys
    def data_identity(self) -> dict:
        if self._data is None:
            self._data = self._data_identity() if self._data_identity else {}
        return self._data

    def components(self, id: str) -> dict:
        if id not in self._components:
            a = self[id]
            self._components[id] = {
                "config": config_key(a.config),
                "inputs": {i: self.effective_key(i) for i in a.inputs},
                "data": config_key(self.data_identity()) if a.data else None,
                "code": {c: code_fingerprint(c) for c in a.code},
            }
        return self._components[id]

    def key(self, id: str) -> str:
        return config_key(self.components(id))

    def path(self, id: str, key: str | None = None) -> Path:
        a = self[id]
        name = f"{a.stem}-{key or self.key(id)}{a.suffix}" if a.keyed else f"{a.stem}{a.suffix}"
        return self.root / a.folder / name

    def effective_key(self, id: str) -> str:
        """The key of what a reader of ``id`` gets: a valid legacy artifact's recorded key, else the expected one."""
        st = self.status(id)
        if st.state == "legacy":
            return self._entry_at(st.path)["key"]
        return self.key(id)

    # ----------------------------------------------------------------- manifest
    def manifest(self) -> dict:
        p = manifest_path(self.root)
        if not p.exists():
            return {"format": MANIFEST_FORMAT, "artifacts": {}}
        stamp = (p.stat().st_mtime_ns, p.stat().st_size)
        if getattr(self, "_manifest", (None, None))[0] == stamp:
            return self._manifest[1]
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ArtifactError(f"the manifest {p} cannot be read ({err}); restore it from git "
                                "(git checkout -- results/manifest.json) or rebuild the study") from None
        if not isinstance(data, dict) or not isinstance(data.get("artifacts"), dict):
            raise ArtifactError(f"the manifest {p} is not a qrepro manifest; restore it from git")
        self._manifest = (stamp, data)
        return data

    def _rel(self, path: Path) -> str:
        return str(Path(path).relative_to(self.root))

    def _entry_at(self, path: Path) -> dict | None:
        return self.manifest()["artifacts"].get(self._rel(path))

    def _locked(self):
        """The manifest's writer lock (:mod:`qrepro.lock`; others wait for it: a record takes milliseconds)."""
        p = manifest_path(self.root)
        return hold(p, f"the manifest {p}", wait=True)

    def _write_manifest(self, m: dict):
        """Write the manifest atomically (call inside :meth:`_locked`)."""
        m["format"] = MANIFEST_FORMAT
        m["artifacts"] = dict(sorted(m["artifacts"].items()))
        write_text_atomic(manifest_path(self.root), json.dumps(m, indent=1, sort_keys=True) + "\n")

    def _set_entry(self, rel: str, entry: dict):
        """Write one manifest record, under the lock, on the manifest as it is on disk now."""
        with self._locked():
            m = self.manifest()
            m["artifacts"][rel] = entry
            self._write_manifest(m)
        self._forget()

    def _forget(self):
        """Drop the statuses and components worked out so far (a record or a code change makes them old)."""
        self._status.clear()
        self._components.clear()

    def record(self, id: str, path: Path | None = None, legacy: bool = False, note: str | None = None) -> dict:
        """Write ``id``'s completion record (digest, key, components); the artifact exists from now on."""
        path = Path(path or self.path(id))
        comps = self.components(id)
        if legacy:
            comps = {**comps, "code": None}
        entry = {"id": id, "key": config_key(comps), "sha256": sha256_file(path), "bytes": path.stat().st_size,
                 "components": comps, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 **({"study": self.study} if self.study else {})}
        if legacy:
            entry["legacy"] = True
        if note:
            entry["note"] = note
        self._set_entry(self._rel(path), entry)
        return entry

    # ----------------------------------------------------------------- status
    def _digest(self, path: Path) -> str:
        st = path.stat()
        cached = self._digests.get(path)
        if cached and cached[:2] == (st.st_mtime, st.st_size):
            return cached[2]
        d = sha256_file(path)
        self._digests[path] = (st.st_mtime, st.st_size, d)
        return d

    def _check_file(self, id: str, path: Path, entry: dict, state: str, detail: str = "") -> Status:
        if not path.exists():
            return Status(id, "missing", path, "recorded in the manifest but the file is gone")
        if self._digest(path) != entry["sha256"]:
            return Status(id, "corrupt", path, "its content differs from the SHA-256 recorded when it was written "
                                               "(swapped, edited, truncated or damaged)")
        return Status(id, state, path, detail)

    def _why(self, recorded: dict, expected: dict) -> str:
        why = []
        if recorded.get("config") != expected["config"]:
            why.append("config changed")
        if recorded.get("data") != expected["data"]:
            why.append("data changed")
        changed = [i for i, k in expected["inputs"].items() if recorded.get("inputs", {}).get(i) != k]
        if changed:
            why.append("input changed: " + ", ".join(changed))
        code = recorded.get("code")
        if code is not None:
            mods = [c for c, f in expected["code"].items() if code.get(c) != f]
            if mods:
                why.append("code changed: " + ", ".join(mods))
        elif not why:
            why.append("made before code fingerprints")
        return "; ".join(why) or "key changed"

    def _mine(self, entry: dict) -> bool:
        """Whether a manifest entry is this study's: recorded by it, or by code that recorded no study."""
        return entry.get("study") in (None, self.study)

    def _entries(self, id: str) -> dict[str, dict]:
        """This study's manifest entries of ``id``, by relative path."""
        return {r: e for r, e in self.manifest()["artifacts"].items() if e.get("id") == id and self._mine(e)}

    def status(self, id: str) -> Status:
        if id in self._status:
            return self._status[id]
        a = self[id]
        expected = self.components(id)
        key = config_key(expected)
        path = self.path(id, key)
        entries = self._entries(id)
        here = entries.get(self._rel(path))
        if here is not None and here["key"] == key:
            st = self._check_file(id, path, here, "fresh")
        else:
            st = None
            for rel, e in entries.items():  # a legacy artifact made by this config, data and inputs
                same = all(e["components"].get(c) == expected[c] for c in ("config", "data", "inputs"))
                if e.get("legacy") and same:
                    st = self._check_file(id, self.root / rel, e, "legacy",
                                          e.get("note", "made before code fingerprints existed"))
                    break
            if st is None:
                progress = path.with_suffix(a.partial) if a.partial else path
                if a.resumable and progress.exists() and here is None:
                    st = Status(id, "in progress", path, "resumable: rerun its stage")
                elif path.exists() and here is None:
                    st = Status(id, "missing", path, "the file has no completion record (its run did not finish)")
                elif entries:
                    rel, e = max(entries.items(), key=lambda kv: kv[1].get("written", ""))
                    st = Status(id, "stale", path, self._why(e["components"], expected) + f" (have {rel})")
                else:
                    st = Status(id, "missing", path)
        self._status[id] = st
        return st

    def carry_forward(self, note: str) -> list[str]:
        """Re-record as ``legacy`` (usable, its code no longer checked; ``note`` says why) every
        artifact that is stale only because code changed: same config, data and inputs, content
        intact.  For a change shown to compute the same thing (a restructuring, with a test that
        compares the smoke study's artifacts before and after); the next rebuild replaces them.
        Upstream artifacts go first, so their dependants' inputs still match.  An artifact already
        legacy gets ``note`` added to its own (its code is no longer checked: the note says which
        changes were shown to compute the same).  Returns the ids."""
        done = []
        for id in self._upstream_first():
            self._forget()
            st = self.status(id)
            if st.state == "legacy":
                rel, e = self._rel(st.path), self._entry_at(st.path)
                if note not in e.get("note", ""):
                    self._set_entry(rel, {**e, "note": "; ".join(filter(None, [e.get("note"), note]))})
                    done.append(id)
                continue
            if st.state != "stale":
                continue
            expected = self.components(id)
            entries = {r: e for r, e in self._entries(id).items()
                       if all(e["components"].get(c) == expected[c] for c in ("config", "data", "inputs"))}
            if not entries:
                continue
            rel, e = max(entries.items(), key=lambda kv: kv[1].get("written", ""))
            if self._check_file(id, self.root / rel, e, "ok").state != "ok":
                continue
            self._set_entry(rel, {**e, "components": {**e["components"], "code": None}, "legacy": True, "note": note})
            done.append(id)
        self._forget()
        return done

    def adopt(self, verify: Callable[[Artifact, Path], str | None], note: str) -> tuple[list[str], list[str]]:
        """Record (for a lost or damaged manifest) every keyed artifact that has no record but whose file
        sits at its expected path -- its name holds the key of this config, inputs, data and code -- and
        passes ``verify(artifact, path)`` (the file's own checksums and completeness: ``None``, or why
        not); upstream first, so dependants' keys see their inputs.  Returns ``(adopted ids, refusals)``.
        A legacy artifact (its name holds an older key) cannot be re-adopted: restore the manifest."""
        adopted, refused = [], []
        for id in self._upstream_first():
            self._forget()
            a = self[id]
            if not a.keyed or self.status(id).usable or not all(self.done(i) for i in a.inputs):
                continue
            path = self.path(id)
            if not path.exists() or self._entry_at(path) is not None:
                continue
            why = verify(a, path)
            if why:
                refused.append(f"{id}: {why}")
                continue
            self.record(id, path, note=note)
            adopted.append(id)
        self._forget()
        return adopted, refused

    def files_without_manifest(self) -> list[Path]:
        """The keyed artifacts' files found here when ``manifest.json`` is gone (else none): what a
        study would otherwise move aside and recompute, and ``status --rebuild-manifest`` re-adopts."""
        if manifest_path(self.root).exists():
            return []
        return [self.path(i) for i in self.artifacts if self[i].keyed and self.path(i).exists()]

    def _upstream_first(self) -> list[str]:
        order, seen = [], set()

        def visit(i):
            if i not in seen:
                seen.add(i)
                for j in self[i].inputs:
                    visit(j)
                order.append(i)
        for i in self.artifacts:
            visit(i)
        return order

    def orphans(self) -> list[str]:
        """Recorded files of this study's artifacts that no current artifact resolves to: older
        versions left behind when a config, input, data or code change gave an artifact a new key."""
        current = {self._rel(self.status(i).path) for i in self.artifacts}
        return [rel for rel, e in self.manifest()["artifacts"].items()
                if e.get("id") in self.artifacts and self._mine(e) and rel not in current]

    def remove_orphans(self) -> list[str]:
        """Delete :meth:`orphans` (files and manifest records) and their sidecars (files named like
        them with another suffix: an ablation's ``.partial.jsonl`` and ``.meta.json``); returns what was
        removed."""
        gone = self.orphans()
        with self._locked():
            m = self.manifest()
            for rel in gone:
                path = self.root / rel
                for side in path.parent.glob(glob.escape(path.stem) + ".*"):
                    if self._rel(side) not in m["artifacts"]:  # never another recorded artifact's file
                        side.unlink(missing_ok=True)
                path.unlink(missing_ok=True)
                m["artifacts"].pop(rel, None)
            self._write_manifest(m)
        self._forget()
        return gone

    def report(self, ids=None) -> list[Status]:
        return [self.status(i) for i in (ids or self.artifacts)]

    def resolve(self, id: str) -> Path:
        """The path of a usable (fresh or legacy) artifact, digest checked; else an :class:`ArtifactError`."""
        st = self.status(id)
        if st.usable:
            return st.path
        raise ArtifactError(f"{st.path}: {st.state}" + (f" ({st.detail})" if st.detail else "") +
                            f"; rebuild with: {self.rebuild(self[id].stage)}")

    def done(self, id: str) -> bool:
        return self.status(id).usable

    def matching(self, patterns) -> list[str]:
        """The ids that match any of ``patterns`` (shell-style: ``trial/bnn-*-t0.5-*``), in graph order; a
        pattern that matches none is refused with examples of the ids."""
        hits = {p: set(fnmatch.filter(self.artifacts, p)) for p in patterns}
        unmatched = [p for p, ids in hits.items() if not ids]
        if unmatched:
            examples = ", ".join(self.ids(s)[0] for s in dict.fromkeys(a.stage for a in self.artifacts.values()))
            raise BadInput(f"no artifact id matches {' '.join(map(repr, unmatched))}; ids look like: {examples} "
                           "(python -m qrepro status lists them all)")
        return [i for i in self.artifacts if any(i in ids for ids in hits.values())]

    def needed(self, ids) -> list[str]:
        """``ids`` and every input they need that is not usable, recursively, each after its inputs."""
        order, seen = [], set()

        def visit(id):
            if id not in seen:
                seen.add(id)
                for i in self[id].inputs:
                    if not self.done(i):
                        visit(i)
                order.append(id)
        for id in ids:
            visit(id)
        return order

    def check_inputs(self, stages) -> None:
        """Refuse, before any work, a run of ``stages`` that would need an input it neither finds usable
        nor builds itself (``--stages search`` before the base models exist)."""
        planned = {i for s in stages for i in self.ids(s)}
        for id in planned:
            if self.done(id):
                continue
            for i in self[id].inputs:
                if i not in planned and not self.done(i):
                    st = self.status(i)
                    raise ArtifactError(f"{id} needs {i}, which is {st.state} and not among the stages run "
                                        f"({' '.join(stages)}); build it first: {self.rebuild(self[i].stage)}")

    def build(self, id: str, context=None) -> Path:
        """Make ``id`` unless it is fresh or legacy; its inputs must be usable.  The maker is called
        as ``make(context, artifact, path)`` (``context``: what makers share, by default this graph)."""
        if self.done(id):
            print(f"[cached] {self.status(id).path.name}")
            return self.status(id).path
        a = self[id]
        for i in a.inputs:
            self.resolve(i)
        path = self.path(id)
        path.parent.mkdir(parents=True, exist_ok=True)
        st = self.status(id)
        if path.exists() and st.state != "in progress" and (a.keyed or st.state == "corrupt") and is_main():
            # never overwrite a checkpoint or journal someone may want back (stable tables are regenerated)
            aside = path.with_name(f"{path.name}.{st.state.replace(' ', '-')}-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(path, aside)
            print(f"[moved aside] {path.name} ({st.state}: {st.detail}) -> {aside.name}")
        barrier()
        a.make(self if context is None else context, a, path)  # under torchrun every rank trains; only rank 0 writes
        if is_main():
            self.record(id, path)
        barrier()  # the other ranks read the record rank 0 just wrote
        self._forget()
        return path
