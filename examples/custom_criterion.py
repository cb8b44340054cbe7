"""A criterion of your own: registered by name, it is accepted wherever a criterion is named
(``prune``, ``PruneObjective``, ``search_ratios``), and compared here with the paper's criterion and
``bn_scale`` on the committed BNN ResNet-20, every block's first convolution pruned by half.

Run from the repository root after `make reproduce` (or `make setup`): python examples/custom_criterion.py
(about 20 s on 2 CPU cores; tests/test_examples.py runs it on fewer images).
"""
from qrepro import report
from qrepro.criteria import LayerView, Selection, register
from qrepro.data import load_splits
from qrepro.prune import prune, recalibrate_batchnorm
from qrepro.train import evaluate


@register("gamma_l1")
def gamma_l1(view: LayerView, n_keep: int) -> Selection:
    """Keep the filters with the largest |gamma| x mean |latent weight| (a filter the BatchNorm
    silences, or whose weights are near zero, matters little)."""
    scores = view.gamma.abs() * view.latent.abs().mean(1)
    keep = scores.argsort(descending=True, stable=True)[:n_keep].sort().values
    return Selection(keep, scores)


model, _ = report.load_base("bnn")  # the committed BNN ResNet-20 (results/), digest checked
splits = load_splits("fashion-mnist", val_size=5000)  # the study's split
for criterion in ("gamma_l1", "redundancy", "bn_scale"):
    pruned = prune(model, 0.5, criterion)  # one ratio for every block's first convolution
    recalibrate_batchnorm(pruned, splits.train_eval, 5)
    print(criterion, round(evaluate(pruned, splits.val)["acc"], 2))
