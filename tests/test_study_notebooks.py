"""The tiny study end to end, then every notebook in order under papermill (smoke mode)."""
import pandas as pd
import pytest

from qrepro import study
from qrepro.export import load_packed
from qrepro.size import MB, model_size_bytes

pytestmark = pytest.mark.slow

FIGURES = ["quantizers_ste", "weight_histograms", "filter_norms", "training_curves", "ablation_bn",
           "ablation_finetune", "search_convergence", "search_ratios", "gp_posterior", "pareto_front",
           "pareto_hypervolume"]
TABLES = {
    "filter_duplicates": {"layer", "filters", "exact_duplicates", "mean_nn_differing", "model"},
    "baselines": {"model", "test_top1", "params", "size_MB"},
    "resnet18_size": {"quantization", "convention", "unpruned_MB", "paper_pruned_MB"},
    "ablation_summary": {"model", "stage", "ratio", "criterion", "val_top1_mean", "val_top1_std"},
    "search_summary": {"model", "target", "method", "best_val_top1_mean", "best_val_top1_std"},
    "pareto_front": {"value", "size_MB", "pruned_fraction"},
    "paper_table": {"model", "configuration", "test_top1_mean", "test_top1_std", "size_MB", "pruned_percent",
                    "file_MB"},
    "paper_reference": {"quantization", "top1", "size_MB"},
}


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    from qrepro.notebooks import run_notebooks

    root = tmp_path_factory.mktemp("results")
    study.run_study(smoke=True, root=root, progress=False)
    run_notebooks(smoke=True, root=root)
    return root


def test_every_figure_and_table_exists(smoke_results):
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (smoke_results / "figures" / f"{name}.{ext}").stat().st_size > 1000, name
    for name, columns in TABLES.items():
        df = pd.read_csv(smoke_results / "tables" / f"{name}.csv")
        assert columns <= set(df.columns), (name, set(df.columns))
        assert len(df) > 0 and (smoke_results / "tables" / f"{name}.md").exists()
    assert len(list((smoke_results / "notebooks").glob("*.ipynb"))) == 6


def test_accuracies_are_percentages(smoke_results):
    for name, col in (("baselines", "test_top1"), ("ablation_summary", "val_top1_mean"),
                      ("search_summary", "best_val_top1_mean"), ("paper_table", "test_top1_mean")):
        values = pd.read_csv(smoke_results / "tables" / f"{name}.csv")[col]
        assert values.between(0, 100).all(), name


def test_paper_table_sizes_come_from_the_loaded_models(smoke_results):
    table = pd.read_csv(smoke_results / "tables" / "paper_table.csv")
    for job in study.final_jobs(True):
        model, _ = load_packed(study.final_path(job, True, smoke_results))
        label = {"bnn": "BNN (1-bit)", "dorefa": "DoReFa 2-bit"}[job["model"]]
        row = table[(table.model == label) & table.configuration.str.startswith(job["method"])]
        assert row.size_MB.iloc[0] == pytest.approx(model_size_bytes(model) / MB, rel=1e-9)
        assert row.file_MB.iloc[0] * MB >= model_size_bytes(model)


def test_study_is_cached_on_a_second_run(smoke_results, capsys):
    study.run_study(smoke=True, root=smoke_results, progress=False)
    out = capsys.readouterr().out
    assert "[train]" not in out and "[search]" not in out and "[finetune]" not in out
    assert out.count("[cached]") >= 3
