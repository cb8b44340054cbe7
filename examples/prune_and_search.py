"""Prune the committed BNN ResNet-20 at searched per-layer ratios: the README's example, as it is there.

Run from the repository root after `make reproduce` (or `make setup`): python examples/prune_and_search.py
(a 40-evaluation search, about a minute on 2 CPU cores). tests/test_examples.py runs it at a small budget
and checks that the README shows this file's code.
"""
from qrepro import report
from qrepro.data import load_splits
from qrepro.export import load_packed, save_packed
from qrepro.inference import fuse_for_inference
from qrepro.objective import PruneObjective
from qrepro.prune import prunable_layers, prune, recalibrate_batchnorm
from qrepro.search import SearchConfig, search_ratios
from qrepro.size import SizeModel, model_size_bytes
from qrepro.train import evaluate

model, _ = report.load_base("bnn")                    # the committed BNN ResNet-20 (results/), digest checked
splits = load_splits("fashion-mnist", val_size=5000)  # the study's split: 5,000 validation images, seed 0
layers = prunable_layers(model)                       # the first convolution of every basic block
objective = PruneObjective(model, splits, "redundancy", bn_batches=5, val_images=2000)
result = search_ratios(objective, SizeModel.from_model(model, layers),
                       SearchConfig(layers=layers, target=0.2612, budget=40), journal="search.jsonl")
pruned = prune(model, dict(zip(layers, result.best["ratios"])), "redundancy")  # filters physically removed
recalibrate_batchnorm(pruned, splits.train_eval, 5)   # the pruned network's BatchNorm statistics
print(evaluate(pruned, splits.val)["acc"], model_size_bytes(pruned) / model_size_bytes(model))
save_packed("pruned.qrpk", pruned)                    # 1 bit per binary weight
fast = fuse_for_inference(load_packed("pruned.qrpk")[0])  # inference only: BatchNorm and scales folded
