"""Data loaders on files the tests write in the real layouts (IDX, CIFAR batches, ImageFolder)."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from qrepro import data as D


def write_idx(path, array, gz=True):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


def make_fashion(folder, n_train=120, n_test=30):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28)), gz=False)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.arange(n_test) % 10, gz=False)
    return folder


def test_read_idx_round_trip(tmp_path):
    a = np.arange(24).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", a)
    assert torch.equal(D.read_idx(tmp_path / "x.gz"), torch.from_numpy(a.astype(np.uint8)))


def test_truncated_idx_is_reported(tmp_path):
    write_idx(tmp_path / "x", np.zeros((10, 4)), gz=False)
    raw = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="truncated"):
        D.read_idx(tmp_path / "x")


def test_fashion_mnist_from_folder_with_fixed_validation_split(tmp_path):
    folder = make_fashion(tmp_path / "fm")
    s1 = D.load_splits("fashion-mnist", root=folder, val_size=20, batch_size=16)
    s2 = D.load_splits("fashion-mnist", root=folder, val_size=20, batch_size=16)
    assert s1.train.dataset_size == 100 and s1.val.dataset_size == 20 and s1.test.dataset_size == 30
    assert torch.equal(s1.val.images, s2.val.images)
    # validation images are held out of training: no row appears in both
    tr = {bytes(x.numpy()) for x in s1.train.images}
    assert not any(bytes(x.numpy()) in tr for x in s1.val.images)
    x, y = next(iter(s1.train))
    assert x.shape == (16, 1, 28, 28) and y.shape == (16,)
    assert s1.num_classes == 10 and s1.in_channels == 1


def test_missing_fashion_mnist_lists_the_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(D.paths, "DATA_DIR", tmp_path / "nodata")
    monkeypatch.setattr(D.paths, "DEBIAN_FASHION_MNIST", tmp_path / "nodebian")
    with pytest.raises(D.DatasetNotFound) as err:
        D.load_splits("fashion-mnist")
    msg = str(err.value)
    for hint in ("root=", "apt-get install dataset-fashion-mnist", "download=True", str(tmp_path / "nodebian")):
        assert hint in msg
    assert "\n" not in msg  # one line
    (tmp_path / "empty").mkdir()
    with pytest.raises(D.DatasetNotFound, match=f"{tmp_path / 'empty'}"):  # a given root is the only place looked
        D.load_splits("fashion-mnist", root=tmp_path / "empty")


def test_cifar10_from_batch_files(tmp_path, monkeypatch):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)

    def batch(n):
        return {"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), "labels": list(np.arange(n) % 10)}

    for i in range(1, 6):
        pickle.dump(batch(20), open(base / f"data_batch_{i}", "wb"))
    pickle.dump(batch(10), open(base / "test_batch", "wb"))
    pickle.dump({"label_names": [str(i) for i in range(10)]}, open(base / "batches.meta", "wb"))
    # torchvision checks the md5 of the real files; ours are tiny stand-ins in the same format
    s = D.load_splits("cifar10", root=tmp_path, val_size=10, batch_size=8, skip_integrity_check=True)
    assert s.train.dataset_size == 90 and s.val.dataset_size == 10 and s.test.dataset_size == 10
    x, _ = next(iter(s.train))
    assert x.shape == (8, 3, 32, 32)


def test_imagenet_from_imagefolder(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 3)):
        for cls in ("a", "b"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / f"{i}.png")
    s = D.load_splits("imagenet", root=tmp_path, val_size=4, batch_size=4, loader_workers=0, image_size=32)
    x, y = next(iter(s.train))
    assert x.shape == (4, 3, 32, 32) and s.num_classes == 2
    assert len(s.test.dataset) == 6


def test_imagenet_missing_and_unknown_dataset(tmp_path):
    with pytest.raises(D.DatasetNotFound, match="ImageFolder"):
        D.load_splits("imagenet", root=tmp_path)
    with pytest.raises(ValueError, match="fashion-mnist, cifar10, imagenet, synthetic"):
        D.load_splits("mnist")


def test_augmentation_is_a_shifted_crop():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    loader = D.TensorLoader(images, torch.zeros(2), batch_size=2, augment=True, pad=1, flip=False, mean=(0,),
                            std=(1 / 255,))
    x, _ = next(iter(loader))
    padded = torch.nn.functional.pad(images.float(), (1, 1, 1, 1))
    for i in range(2):  # every augmented image equals one of the 9 shifted windows
        windows = [padded[i, :, dy:dy + 6, dx:dx + 6] for dy in range(3) for dx in range(3)]
        assert any(torch.allclose(x[i], w, atol=1e-3) for w in windows)


def test_training_draws_its_batches_from_the_config_seed():
    """``train`` with ``TrainConfig.seed = s`` sees the batches of the training loader built with
    seed ``s`` (reference: that loader iterated directly), whatever seed the splits were made with."""
    from qrepro.train import TrainConfig, train

    splits = D.load_splits("synthetic", batch_size=16, seed=0, image_size=8)
    for seed in (0, 3):
        seen = []
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, splits.num_classes))
        model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
        train(model, splits, TrainConfig(dataset="synthetic", batch_size=16, epochs=1, seed=seed),
              progress=False, eval_every_epoch=False, max_steps=3)
        t = splits.train
        reference = D.TensorLoader(t.images, t.labels, batch_size=16, shuffle=True, augment=t.augment, pad=t.pad,
                                   flip=t.flip, mean=tuple(t.mean.flatten().tolist()),
                                   std=tuple(t.std.flatten().tolist()), seed=seed, drop_last=t.drop_last)
        expected = [x for (x, _), _ in zip(reference, range(3))]
        assert len(seen) == 3 and all(torch.equal(a, b) for a, b in zip(seen, expected)), seed


def test_subset_loader_takes_the_images_after_skip_in_both_loaders():
    """Selection images are the validation images after the search's: rows [skip, skip + n) of the data, in
    order, from the in-memory loader and from a DataLoader over a dataset alike."""
    images = torch.arange(10 * 4, dtype=torch.float).reshape(10, 1, 2, 2)
    labels = torch.arange(10)
    tensor = D.TensorLoader(images, labels, batch_size=3, mean=(0.0,), std=(1.0,))
    dataset = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=3)
    for loader in (tensor, dataset):
        for skip, n, rows in ((0, 4, [0, 1, 2, 3]), (4, 3, [4, 5, 6]), (4, None, [4, 5, 6, 7, 8, 9]), (8, 5, [8, 9])):
            got = torch.cat([y for _, y in D.subset_loader(loader, n, skip=skip)]).tolist()
            assert got == rows, (type(loader).__name__, skip, n)
