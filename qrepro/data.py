"""Datasets by name: ``fashion-mnist``, ``cifar10``, ``imagenet``, ``synthetic``.

``load_splits(name, ...)`` returns a :class:`Splits` of train / validation / test, the
validation split a fixed seeded subset held out of the training images (Fashion-MNIST:
5,000 of 60,000).  Small datasets live in memory as uint8 tensors and are served by
:class:`TensorLoader`, which augments whole batches at once (far faster on 2 CPU cores
than per-image PIL transforms); ImageNet goes through torchvision's ImageFolder and a
``DataLoader``.

Where Fashion-MNIST is looked for, in order: the folder passed as ``root``,
``data/fashion-mnist/``, ``/usr/share/datasets/fashion-mnist/`` (Debian's
``dataset-fashion-mnist``), then torchvision's download if ``download=True``.
"""
from __future__ import annotations

import copy
import dataclasses
import gzip
import hashlib
import inspect
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from torch.utils.data import DataLoader, Subset
from torchvision.datasets import ImageFolder

from . import paths
from .errors import BadInput

DATASETS = ("fashion-mnist", "cifar10", "imagenet", "synthetic")
STATS = {  # per-channel mean and std of the training images, in [0, 1] units
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "synthetic": ((0.5,), (0.25,)),
}
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetNotFound(BadInput, FileNotFoundError):
    """A dataset could not be found; the message lists every way to provide it."""


# --------------------------------------------------------------------------- in-memory loader
class TensorLoader:
    """Batches of ``(images, labels)`` from uint8 images ``(N, C, H, W)`` and labels ``(N,)``.

    Images are scaled to ``[0, 1]`` and normalized; with ``augment`` each batch gets a
    random crop (zero padding ``pad``) and, where ``flip``, a random horizontal flip.
    The order and augmentation come from ``seed`` and the epoch counter, so two loaders
    built alike yield the same batches.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 128, shuffle: bool = False,
                 augment: bool = False, pad: int = 2, flip: bool = True, mean=(0.5,), std=(0.5,), seed: int = 0,
                 drop_last: bool = False):
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        self.images, self.labels = images, labels.long()
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.pad, self.flip, self.seed, self.drop_last = pad, flip, seed, drop_last
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.epoch = 0

    def __len__(self):
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def dataset_size(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device) -> "TensorLoader":
        """The same loader with its images, labels and normalization on ``device`` (the whole
        dataset stays there, so no batch is copied from the host during training)."""
        out = copy.copy(self)
        out.images, out.labels = self.images.to(device), self.labels.to(device)
        out.mean, out.std = self.mean.to(device), self.std.to(device)
        return out

    def reseeded(self, seed: int) -> "TensorLoader":
        """The same loader (same data, no copy) drawing its order and augmentation from ``seed``."""
        out = copy.copy(self)
        out.seed = seed
        return out

    def subset(self, n_images: int | None = None, skip: int = 0, **options) -> "TensorLoader":
        """A loader over ``n_images`` (all if None) after the first ``skip``, with the same normalization
        and augmentation settings; ``options`` override batch_size, shuffle, augment, seed, ..."""
        rows = slice(skip, None if n_images is None else skip + n_images)
        kw = dict(batch_size=self.batch_size, shuffle=False, augment=False, pad=self.pad, flip=self.flip,
                  mean=tuple(self.mean.flatten().tolist()), std=tuple(self.std.flatten().tolist()),
                  seed=self.seed)
        # copies, not views: a view would pickle (to a Dask worker) the whole dataset it is cut from
        return TensorLoader(self.images[rows].clone(), self.labels[rows].clone(), **{**kw, **options}).to(self.device)

    def shard(self, rank: int, world: int) -> "TensorLoader":
        """The same loader serving process ``rank`` of ``world`` its contiguous part of every batch
        (data-parallel training): the order and augmentation are drawn for the whole batch, as one
        process would, so the ``world`` parts together are exactly the one-process batches."""
        out = copy.copy(self)
        out.rank, out.world = rank, world
        return out

    rank, world = 0, 1

    def _draw(self, b: int, g: torch.Generator) -> tuple:
        """Random crop offsets and flips of a batch of ``b`` images (drawn for the whole batch)."""
        p = self.pad
        dy = torch.randint(0, 2 * p + 1, (b,), generator=g)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=g)
        flip = torch.rand(b, generator=g) < 0.5 if self.flip else None
        return dy, dx, flip

    def _augment(self, x: torch.Tensor, dy, dx, flip) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.pad
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        dev = x.device  # random numbers come from the CPU generator, so every device sees the same batches
        dy, dx = dy.to(dev), dx.to(dev)
        rows = (dy.view(b, 1) + torch.arange(h, device=dev).view(1, h))  # (B, H)
        cols = (dx.view(b, 1) + torch.arange(w, device=dev).view(1, w))  # (B, W)
        idx_b = torch.arange(b, device=dev).view(b, 1, 1)
        out = padded.permute(0, 2, 3, 1)[idx_b, rows.view(b, h, 1), cols.view(b, 1, w)].permute(0, 3, 1, 2)
        if flip is not None:
            out = torch.where(flip.to(dev).view(b, 1, 1, 1), out.flip(3), out)
        return out

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        self.epoch += 1
        n = len(self.labels)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            b = len(idx)
            params = self._draw(b, g) if self.augment else None
            if self.world > 1:  # this process's part of the batch
                lo, hi = b * self.rank // self.world, b * (self.rank + 1) // self.world
                idx = idx[lo:hi]
                params = params and tuple(None if t is None else t[lo:hi] for t in params)
            x = self.images[idx].float().div_(255)
            if self.augment:
                x = self._augment(x, *params)
            yield (x - self.mean) / self.std, self.labels[idx]


@dataclass
class Splits:
    """Train (augmented, shuffled), validation and test loaders, plus what made them."""

    train: object
    val: object
    test: object
    num_classes: int
    in_channels: int
    image_size: int
    source: str

    def to(self, device) -> "Splits":
        """In-memory loaders moved to ``device``; a torchvision ``DataLoader`` is left as it is
        (its batches are moved as they are used)."""
        move = lambda ld: ld.to(device) if isinstance(ld, TensorLoader) else ld  # noqa: E731
        return dataclasses.replace(self, train=move(self.train), val=move(self.val), test=move(self.test))

    @property
    def train_eval(self):
        """Training images without augmentation, in a fixed order (BatchNorm re-estimation)."""
        t = self.train
        return t.subset(shuffle=True, seed=t.seed + 1) if isinstance(t, TensorLoader) else t


def _split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not 0 <= val_size < n:
        raise BadInput(f"val_size {val_size}: the training set has {n} images, so val_size must be in [0, {n}) "
                       "(the validation images are taken from it); pass a smaller val_size")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def _make_splits(x_train, y_train, x_test, y_test, name, source, val_size, batch_size, seed, augment_kw,
                 limit=None) -> Splits:
    tr, va = _split_indices(len(y_train), val_size, seed)
    if limit:
        tr, va = tr[:limit], va[:max(1, limit // 10)]
        x_test, y_test = x_test[:max(1, limit // 5)], y_test[:max(1, limit // 5)]
    mean, std = STATS[name]
    common = dict(batch_size=batch_size, mean=mean, std=std)
    return Splits(
        train=TensorLoader(x_train[tr], y_train[tr], shuffle=True, augment=True, seed=seed, drop_last=True,
                           **augment_kw, **common),
        val=TensorLoader(x_train[va], y_train[va], **common),
        test=TensorLoader(x_test, y_test, **common),
        num_classes=int(max(y_train.max(), y_test.max())) + 1,
        in_channels=x_train.shape[1], image_size=x_train.shape[-1], source=str(source),
    )


def loader_size(loader) -> int:
    """Number of images a loader serves (in-memory loader or torchvision ``DataLoader``)."""
    return loader.dataset_size if isinstance(loader, TensorLoader) else len(loader.dataset)


def subset_loader(loader, n_images: int | None = None, batch_size: int | None = None, shuffle: bool = False,
                  augment: bool = False, seed: int = 0, skip: int = 0):
    """A loader over ``n_images`` of ``loader``'s data (all if None) after its first ``skip``, in a fixed
    order (or a seeded shuffle): the in-memory loader's :meth:`TensorLoader.subset`, or a ``DataLoader``
    over a ``Subset`` of the same dataset and transforms (``augment`` is the dataset's to decide there)."""
    if isinstance(loader, TensorLoader):
        return loader.subset(n_images, skip, batch_size=batch_size or loader.batch_size, shuffle=shuffle,
                             augment=augment, seed=seed)

    total = len(loader.dataset)
    stop = total if n_images is None else min(skip + n_images, total)
    g = torch.Generator().manual_seed(seed)
    return DataLoader(Subset(loader.dataset, range(min(skip, total), stop)), batch_size=batch_size or loader.batch_size,
                      shuffle=shuffle,
                      generator=g if shuffle else None, num_workers=loader.num_workers,
                      pin_memory=torch.cuda.is_available())


# --------------------------------------------------------------------------- IDX (Fashion-MNIST)
def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file (optionally gzipped) into a uint8 tensor."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DatasetNotFound(f"{path} cannot be read ({type(err).__name__}: {err}); the file is truncated or "
                              "corrupt: replace it with a complete copy") from None
    if len(data) < 4:
        raise DatasetNotFound(f"{path} is not an IDX file (too short); replace it with a complete copy")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise DatasetNotFound(f"{path} is not an unsigned-byte IDX file (magic {data[:4].hex()}); replace it")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DatasetNotFound(f"{path} is truncated: header says {shape}, found {body.size} values; replace it")
    return torch.from_numpy(body.reshape(shape).copy())


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz", folder / "raw" / stem, folder / "raw" / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def fashion_mnist_candidates(root: str | Path | None = None) -> list[Path]:
    """Where Fashion-MNIST is looked for: only ``root`` when it is given (a root that does
    not hold the files is an error, never a silent fallback), else the default folders."""
    if root is not None:
        return [Path(root)]
    return [paths.DATA_DIR / "fashion-mnist", paths.DEBIAN_FASHION_MNIST]


def find_fashion_mnist(root: str | Path | None = None, download: bool = False) -> Path:
    """The first folder holding the four Fashion-MNIST IDX files, else a :class:`DatasetNotFound`."""
    candidates = fashion_mnist_candidates(root)
    if root is not None and not Path(root).is_dir():
        raise DatasetNotFound(f"data root {root} does not exist or is not a folder; pass the folder holding the "
                              "Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...), or leave it out")
    for folder in candidates:
        if all(_idx_file(folder, stem) for pair in FASHION_FILES.values() for stem in pair):
            return folder
    if download:
        target = paths.DATA_DIR / "fashion-mnist"
        try:
            torchvision.datasets.FashionMNIST(str(target), train=True, download=True)
            torchvision.datasets.FashionMNIST(str(target), train=False, download=True)
            return target / "FashionMNIST"
        except Exception as err:  # network refused, partial file, ...
            reason = f"torchvision's download failed: {err}"
    else:
        reason = "download=False"
    tried = ", ".join(str(c) for c in candidates)
    raise DatasetNotFound(
        f"Fashion-MNIST not found (train-/t10k- images and labels, IDX, optionally .gz) in {tried}; provide it: "
        f"pass root=<folder holding the IDX files>, copy the files into {paths.DATA_DIR / 'fashion-mnist'}, "
        "on Debian apt-get install dataset-fashion-mnist (what `make setup` does), or allow torchvision's "
        f"download with download=True ({reason})")


def load_fashion_mnist(root=None, download=False, val_size=5000, batch_size=128, seed=0, limit=None) -> Splits:
    folder = find_fashion_mnist(root, download)
    arrays = {}
    for split, (img, lab) in FASHION_FILES.items():
        x = read_idx(_idx_file(folder, img))
        y = read_idx(_idx_file(folder, lab))
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{folder}: {img} has {x.shape[0]} images but {lab} has {y.shape[0]} labels")
        arrays[split] = (x.unsqueeze(1), y)
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
    return _make_splits(xtr, ytr, xte, yte, "fashion-mnist", folder, val_size, batch_size, seed,
                        dict(pad=2, flip=True), limit)


# --------------------------------------------------------------------------- CIFAR-10, ImageNet
class _UncheckedCIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR-10 reader without its MD5 check (a subset or a re-encoded copy)."""

    def _check_integrity(self) -> bool:
        return all((Path(self.root) / self.base_folder / name).is_file()
                   for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:  # the class names only (the meta file's MD5 is checked there too)
        self.classes = [str(i) for i in range(10)]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


def load_cifar10(root=None, download=False, val_size=5000, batch_size=128, seed=0, limit=None,
                 skip_integrity_check=False) -> Splits:
    """CIFAR-10 in torchvision's python format (``root/cifar-10-batches-py/``); torchvision checks each
    file's MD5, which a subset or a re-encoded copy fails: ``skip_integrity_check`` reads it anyway
    (the cache keys hash the files' content either way)."""
    root = Path(root) if root is not None else paths.DATA_DIR / "cifar10"
    reader = _UncheckedCIFAR10 if skip_integrity_check else torchvision.datasets.CIFAR10
    try:
        train = reader(str(root), train=True, download=download)
        test = reader(str(root), train=False, download=download)
    except RuntimeError as err:
        if all((root / "cifar-10-batches-py" / f).is_file() for f in CIFAR10_FILES):
            raise DatasetNotFound(
                f"CIFAR-10 under {root} fails torchvision's MD5 check (a subset, an edited or a re-encoded copy); "
                "pass --skip-integrity-check (skip_integrity_check=True) to read it anyway") from None
        raise DatasetNotFound(
            f"CIFAR-10 not found under {root} ({err}). Put the python-version batches "
            "(cifar-10-batches-py/) there, pass root=<folder>, or pass download=True where the network allows."
        ) from err

    def tensors(ds):
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)

    (xtr, ytr), (xte, yte) = tensors(train), tensors(test)
    return _make_splits(xtr, ytr, xte, yte, "cifar10", root, val_size, batch_size, seed, dict(pad=4, flip=True),
                        limit)


def load_imagenet(root=None, val_size=10000, batch_size=64, seed=0, limit=None, loader_workers=2,
                  image_size=224) -> Splits:
    """ImageNet from an ImageFolder layout: ``root/train/<class>/*.JPEG`` and ``root/val/<class>/*``.

    The validation split is held out of ``train/``; ``val/`` is the test set, as usual.
    """
    root = Path(root) if root is not None else paths.DATA_DIR / "imagenet"
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise DatasetNotFound(f"ImageNet not found: expected ImageFolder layouts {root}/train/<class>/ and "
                              f"{root}/val/<class>/; pass root=<folder> (ImageNet cannot be downloaded).")
    mean, std = STATS["imagenet"]
    resize = int(image_size * 256 / 224)
    train_tf = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(mean, std)])
    eval_tf = T.Compose([T.Resize(resize), T.CenterCrop(image_size), T.ToTensor(), T.Normalize(mean, std)])
    train_full = ImageFolder(str(root / "train"), train_tf)
    train_eval = ImageFolder(str(root / "train"), eval_tf)
    test = ImageFolder(str(root / "val"), eval_tf)
    tr, va = _split_indices(len(train_full), min(val_size, len(train_full) // 10), seed)
    if limit:
        tr, va = tr[:limit], va[:max(1, limit // 10)]
    g = torch.Generator().manual_seed(seed)
    kw = dict(batch_size=batch_size, num_workers=loader_workers, pin_memory=torch.cuda.is_available())
    return Splits(
        train=DataLoader(Subset(train_full, tr.tolist()), shuffle=True, generator=g, drop_last=True, **kw),
        val=DataLoader(Subset(train_eval, va.tolist()), **kw),
        test=DataLoader(test, **kw),
        num_classes=len(train_full.classes), in_channels=3, image_size=image_size, source=str(root),
    )


# --------------------------------------------------------------------------- synthetic
def load_synthetic(num_classes=4, n_train=512, n_test=128, image_size=8, in_channels=1, batch_size=64, seed=0,
                   val_size=None, limit=None) -> Splits:
    """A small deterministic task for tests: each class is a fixed random template plus noise."""
    g = torch.Generator().manual_seed(1234)
    templates = torch.rand(num_classes, in_channels, image_size, image_size, generator=g)

    def draw(n):
        y = torch.arange(n) % num_classes
        x = 0.6 * templates[y] + 0.4 * torch.rand(n, in_channels, image_size, image_size, generator=g)
        return (x * 255).round().to(torch.uint8), y

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    val_size = n_train // 8 if val_size is None else val_size
    return _make_splits(xtr, ytr, xte, yte, "synthetic", "synthetic", val_size, batch_size, seed,
                        dict(pad=1, flip=False), limit)


LOADERS = {"fashion-mnist": load_fashion_mnist, "cifar10": load_cifar10, "imagenet": load_imagenet,
           "synthetic": load_synthetic}


def load_splits(name: str, root=None, **kwargs) -> Splits:
    """Train / validation / test loaders of a dataset by name (see ``DATASETS``)."""
    if name not in LOADERS:
        raise BadInput(f"unknown dataset {name!r}; accepted values: {', '.join(DATASETS)}")
    if name != "cifar10":
        kwargs.pop("skip_integrity_check", None)  # only CIFAR-10's reader checks its files' MD5
    if name == "synthetic":
        return load_synthetic(**kwargs)
    return LOADERS[name](root=root, **kwargs)


# --------------------------------------------------------------------------- identity (cache keys)
def _content_digest(path: Path) -> str:
    """SHA-256 of a file's content, gunzipped if it is gzip (the same data hashes alike either way)."""
    h = hashlib.sha256()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except (OSError, EOFError) as err:
        raise DatasetNotFound(f"{path} cannot be read ({type(err).__name__}: {err}); the file is truncated or "
                              "corrupt: replace it (Debian: apt-get install --reinstall dataset-fashion-mnist)") from None
    return h.hexdigest()


def dataset_identity(name: str, root=None) -> dict:
    """What identifies the data a study reads, for its cache keys: the dataset's name and the
    SHA-256 of its files' content (Fashion-MNIST, CIFAR-10), or of the listing of file names
    and sizes (ImageNet, where hashing a million JPEGs would cost more than the study)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; accepted values: {', '.join(DATASETS)}")
    if name == "synthetic":
        return {"dataset": name, "generator": hashlib_text(inspect.getsource(load_synthetic))}
    if name == "fashion-mnist":
        folder = find_fashion_mnist(root)
        files = {stem: _content_digest(_idx_file(folder, stem)) for pair in FASHION_FILES.values() for stem in pair}
        return {"dataset": name, "files": files}
    if name == "cifar10":
        folder = (Path(root) if root is not None else paths.DATA_DIR / "cifar10") / "cifar-10-batches-py"
        if not folder.is_dir():
            raise DatasetNotFound(f"CIFAR-10 not found: {folder} does not exist; pass root=<folder holding "
                                  "cifar-10-batches-py/>")
        return {"dataset": name, "files": {p.name: _content_digest(p) for p in sorted(folder.iterdir()) if p.is_file()}}
    folder = Path(root) if root is not None else paths.DATA_DIR / "imagenet"
    if not folder.is_dir():
        raise DatasetNotFound(f"ImageNet not found: {folder} does not exist; pass root=<folder with train/ and val/>")
    listing = "\n".join(f"{p.relative_to(folder)}\t{p.stat().st_size}" for p in sorted(folder.rglob("*")) if p.is_file())
    return {"dataset": name, "listing": hashlib_text(listing)}


def hashlib_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()




