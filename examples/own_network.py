"""Prune your own network: a ternary MobileNetV2 on Fashion-MNIST, trained, searched, pruned, saved,
loaded and fused, in about a minute on 2 CPU cores.

Ternary (TWN weights, float activations) rather than DoReFa or BNN: DoReFa's activation quantizer
clips its input to [0, 1], and MobileNetV2's linear bottlenecks carry negative values (it stays at
chance here); binary MobileNets need a recipe of their own.

Run from the repository root: python examples/own_network.py (tests/test_examples.py runs it on
fewer images and checks that the README shows this file's code).
"""
from qrepro.checkpoint import load_checkpoint, save_checkpoint
from qrepro.data import load_splits
from qrepro.export import load_packed, save_packed
from qrepro.inference import fuse_for_inference
from qrepro.models import build_model
from qrepro.objective import PruneObjective
from qrepro.prune import prunable_layers, prune, recalibrate_batchnorm
from qrepro.quantize import quantize_model
from qrepro.search import SearchConfig, search_ratios
from qrepro.size import SizeModel, model_size_bytes
from qrepro.train import TrainConfig, evaluate, train

splits = load_splits("fashion-mnist", limit=6000)  # 6,000 training images; 600 validation images (limit / 10)
model = build_model("my_networks:mobilenet_v2_small", num_classes=10, in_channels=1)  # any nn.Module builder
model = quantize_model(model, "ternary")  # weights in {-a, 0, +a} per filter; the stem and the head stay float
train(model, splits, TrainConfig(epochs=3, optimizer="adam", lr=0.003, weight_decay=0.0), progress=False)
layers = prunable_layers(model)  # groups one layer writes: the stem, each block's expansion (with its depthwise)
objective = PruneObjective(model, splits, "redundancy", bn_batches=4)  # accuracy on the 600 validation images
result = search_ratios(objective, SizeModel.from_model(model, layers),
                       SearchConfig(layers=layers, target=0.3, budget=8, n_init=4), journal="own.jsonl")
pruned = prune(model, dict(zip(layers, result.best["ratios"])))  # channels removed through the dependency graph
recalibrate_batchnorm(pruned, splits.train_eval, 4)  # the pruned network's BatchNorm statistics
before = evaluate(pruned, splits.val)["acc"]
train(pruned, splits, TrainConfig(epochs=1, optimizer="adam", lr=0.001, weight_decay=0.0), progress=False)  # fine-tune
print(evaluate(model, splits.val)["acc"], before, evaluate(pruned, splits.val)["acc"],
      model_size_bytes(pruned) / model_size_bytes(model))
save_checkpoint("own.pt", pruned)  # records "my_networks:mobilenet_v2_small" and the kept channels
loaded, _ = load_checkpoint("own.pt")
save_packed("own.qrpk", pruned)
fast = fuse_for_inference(load_packed("own.qrpk")[0])  # BatchNorm folded into every convolution before one
