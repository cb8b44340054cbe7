# %% [markdown]
# # qrepro: where to start
#
# *Automatic Pruning for Quantized Neural Networks* (L. Guerra, B. Zhuang, I. Reid, T. Drummond, arXiv:2002.00523),
# taught in four lessons and reproduced in eight results notebooks. Open any of them from here: in JupyterLab, a
# `.py` file opens as a notebook with right-click, *Open With → Notebook* (or make that the default once:
# `jupytext-config set-default-viewer python`). Running, editing and saving one writes only its code and text, so
# `git status` shows your edits and nothing else.
#
# **Install and launch** (a terminal, in the project's folder): `make setup`, then
# `.venv/bin/jupyter lab notebooks/index.py`. The cell below checks that this kernel can run the lessons.

# %%
from pathlib import Path

import qrepro
from qrepro.paths import results_dir

checkpoints = results_dir() / "checkpoints"
print(f"qrepro {qrepro.__version__} from {Path(qrepro.__file__).parent.name}/")
if list(checkpoints.glob("base-*.pt")):
    print("the committed study's checkpoints are here: every lesson and results notebook can run")
else:
    print(f"no checkpoints in {checkpoints}: `make study` builds them (or set smoke = True in a lesson's first cell)")

# %% [markdown]
# ## The lessons (`teaching/`): run them live, in this order
#
# Each runs on 2 quiet CPU cores in the time given (`make teach`, 2026-12-04; on a loaded laptop, the switch in its parameters
# cell makes it shorter). Each opens with learning objectives, states the method in equations, and ends with
# exercises, a summary, prerequisites and references. Solutions are files in `teaching/solutions/`, never run by
# *Run All*: `%load solutions/T1_1.py` in a new cell shows one.
#
# | order | lesson | teaches | time | prerequisites |
# |---|---|---|---|---|
# | 1 | [T1_pruning_quantized_filters](teaching/T1_pruning_quantized_filters.py) | XNOR and DoReFa quantizers and the straight-through estimator; the redundancy criterion against `bn_scale` and `l1`; physical filter removal and the size formula; BatchNorm re-estimation | 15 s | PyTorch, convolutions |
# | 2 | [T2_bayesian_search](teaching/T2_bayesian_search.py) | the search as a problem with a linear size constraint; the GP surrogate and expected improvement drawn as the loop proceeds; noisy evaluations; BO against random search over paired trials, with an interval | 65 s (`trials = 1`: 30 s) | T1; Gaussian distributions |
# | 3 | [T3_fast_pruned_inference](teaching/T3_fast_pruned_inference.py) | folding BatchNorm and the scales into the convolution; DoReFa's levels as integers; what pruning saves in time against MACs | 30 s | T1 |
# | 4 | [T4_joint_precision_search](teaching/T4_joint_precision_search.py) | size and bit-operations at mixed precision, by hand; why the budget is linear in the ratios once the bits are fixed; a joint BO loop over bit-widths and ratios against random search | 35 s | T1, T2 |
#
# **A 90-minute lab**: T1 (30 min), results notebook 1 (10 min), T2 (30 min), results notebooks 3 and 4 to see the
# same at the study's scale (20 min).
#
# ## The results notebooks: read the study's artifacts, in this order
#
# They only read what `make study` computed (`results/`); `make reproduce` runs all eight.
#
# | order | notebook | shows |
# |---|---|---|
# | 1 | [01_quantizers](01_quantizers.py) | the quantizers, the weight histograms, duplicate filters and their distances against random codes (notebooks 1-7: ResNet-20) |
# | 2 | [02_baselines](02_baselines.py) | the unpruned models, their training curves and sizes |
# | 3 | [03_criteria_ablation](03_criteria_ablation.py) | every criterion at uniform ratios, before and after BatchNorm re-estimation and fine-tuning |
# | 4 | [04_bayesian_search](04_bayesian_search.py) | the searches against random search and the uniform ratio, their convergence, the chosen ratios and a GP slice |
# | 5 | [05_pareto_front](05_pareto_front.py) | the accuracy/size front of the multi-objective search and its hypervolume |
# | 6 | [06_paper_table](06_paper_table.py) | the paper-style table of the fine-tuned final models, and how fine-tuning recovers accuracy |
# | 7 | [07_joint_precision_pruning](07_joint_precision_pruning.py) | bit-widths and ratios searched together, against the paper's single-precision settings |
# | 8 | [08_study_v2_claims](08_study_v2_claims.py) | Study v2 (ResNet-18): each of the paper's claims as a paired difference with its 95 % interval, a forest plot, the base models, sizes, duplicate filters and searches |
#
# The README says what each result means; `docs/` holds the protocol, the choices where the paper is silent, and
# what the package promises.
