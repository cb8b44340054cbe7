# %% [markdown]
# # Lesson 3. From a pruned quantized network to fast inference
#
# Pruning removes multiply-accumulates (MACs); whether the time goes down with them depends on how the network is
# run. The training form of a quantized layer re-quantizes its latent weights at every call, and a BatchNorm after
# it costs another pass over every activation. `qrepro.inference.fuse_for_inference` computes once what never
# changes at inference. This lesson derives each step, checks it against the model, and times it.
#
# **You will learn to**
# 1. fold a BatchNorm and the quantizer's scales into the weights and bias of the convolution before it;
# 2. move DoReFa's $1/(2^k - 1)$ from the activations into the weights, so the activations become integer levels;
# 3. fuse a pruned network and check that it computes what the model computes, and measure what pruning saves;
# 4. see why a convolution with few filters wastes vector lanes, and fold output columns into filters to fill them.
#
# Runs live in under a minute on 2 CPU cores; it reads only the committed base checkpoints (no study needed).
# Times on a shared machine move by 10 % or more between runs, ratios less: the cells time the forms they compare
# interleaved, so that they share the machine's noise, and report medians.

# %% tags=["parameters"]
smoke = False  # True: read the tiny smoke study's checkpoints (CI, or a loaded laptop)
results = None  # results folder; None: results/
solutions = False  # True: run every exercise's solution at the end (the tests do; Run All and make teach do not)

# %%
from qrepro.notebooks import check_parameters

smoke, results = check_parameters(smoke=smoke, results=results)  # papermill's values, validated

# %%
# %matplotlib inline
import statistics
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from qrepro import report, study
from qrepro.inference import fold_factors, fold_weight, fuse_for_inference
from qrepro.prune import prune, recalibrate_batchnorm
from qrepro.quantize import dorefa_activation
from qrepro.train import evaluate

_ = torch.manual_seed(0)
REPEATS = 3 if smoke else 15


def median_ms(fns: dict, *args, repeats=REPEATS) -> dict:
    """Median wall time in milliseconds of each ``fn(*args)``, the functions interleaved (after one warm-up call
    each) so that they share the machine's noise; no autograd."""
    times = {name: [] for name in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn(*args)
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(*args)
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


# %% [markdown]
# ## 1. Folding BatchNorm into the convolution
#
# In eval mode a BatchNorm is an affine map per channel $i$, with the running mean $\mu_i$ and variance
# $\sigma_i^2$ it stored during training:
#
# $$ \mathrm{BN}(z)_i = \gamma_i \frac{z_i - \mu_i}{\sqrt{\sigma_i^2 + \epsilon}} + \beta_i
#    = s_i z_i + (\beta_i - s_i \mu_i), \qquad s_i = \frac{\gamma_i}{\sqrt{\sigma_i^2 + \epsilon}} . $$
#
# The convolution before it is linear in its weights, $z_i = W_i * a$ with $W_i = \alpha_i\,\mathrm{sign}(w_i)$ for
# a BNN filter, so BatchNorm and the scale $\alpha_i$ fold into one set of weights and one bias:
#
# $$ \mathrm{BN}(W * a)_i = (s_i W_i) * a + (\beta_i - s_i \mu_i) . $$
#
# One convolution with a bias replaces the convolution, the scaling and the BatchNorm. Check it on a layer of the
# trained BNN:

# %%
bnn, _ = report.load_base("bnn", smoke, results)
bnn.eval()
conv, bn = bnn.layer2[1].conv1, bnn.layer2[1].bn1
a = torch.randn(8, conv.in_channels, 14, 14)
with torch.no_grad():
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    W = conv.quantized_weight() * s.view(-1, 1, 1, 1)  # alpha_i sign(w_i), times s_i
    b = bn.bias - s * bn.running_mean
    folded = F.conv2d(conv.quantize_input(a), W, b, padding=1)
    reference = bn(conv(a))  # the training form: quantize the input and the weights, convolve, BatchNorm
print("largest difference, folded against conv + BatchNorm:", float((folded - reference).abs().max()))
print("one filter's folded weights take", len(W[0].unique()), "values: +-alpha_i s_i")

# %% [markdown]
# ## 2. DoReFa's levels as integers
#
# A DoReFa layer with $k$-bit activations feeds the convolution with $\frac{1}{2^k-1}\mathrm{round}\big((2^k-1)
# \,\mathrm{clip}(a, 0, 1)\big)$. The factor $\frac{1}{2^k-1}$ is a constant, and the convolution is linear:
#
# $$ W * \Big(\tfrac{1}{2^k - 1}\, q\Big) = \Big(\tfrac{1}{2^k - 1} W\Big) * q,
#    \qquad q = \mathrm{round}\big((2^k - 1)\,\mathrm{clip}(a, 0, 1)\big) \in \{0, 1, \dots, 2^k - 1\} . $$
#
# So the fused layer divides its weights once and hands the convolution the integer levels $q$: one pass over
# the activations fewer at every call.

# %%
x = torch.linspace(-0.5, 1.5, 9)
print("DoReFa 2-bit activations:", dorefa_activation(x, 2).tolist())
dorefa, _ = report.load_base("dorefa", smoke, results)
fused_dorefa = fuse_for_inference(dorefa)
layer = fused_dorefa.layer1[0].conv2
print("the fused layer's integer levels:", layer.quantize_input(x.clone()).tolist())

# %% [markdown]
# ## 3. A pruned network, fused
#
# Prune the BNN by half (the first convolution of every block loses half its filters), re-estimate BatchNorm, and
# fuse. The fused copy computes what the model computes, up to float rounding: a value within rounding of a sign's
# threshold may land on the other side, as any reordering of the arithmetic allows. Compare the predictions and the
# accuracy, then the time, against the ratio of MACs pruning left:

# %%
splits = study.load_study_data(smoke)
val = splits.val.subset(300 if not smoke else 64)
pruned = prune(bnn, 0.5, "redundancy")
recalibrate_batchnorm(pruned, splits.train_eval, batches=5)
pruned.eval()
fused, fused_pruned = fuse_for_inference(bnn), fuse_for_inference(pruned)
images = torch.cat([x for x, _ in val])[:256]
with torch.no_grad():
    same = (fused_pruned(images).argmax(1) == pruned(images).argmax(1)).float().mean()
print(f"same prediction on {len(images)} images: {100 * same:.1f} %")
print(f"validation top-1: model {evaluate(pruned, val)['acc']:.1f} %, fused {evaluate(fused_pruned, val)['acc']:.1f} %")


# %%
def macs(model, x):
    """Multiply-accumulates of the convolutions and linear layers for one image."""
    total = []
    hooks = [m.register_forward_hook(lambda m, i, o: total.append(o[0].numel() * m.weight[0].numel()))
             for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(x[:1])
    for h in hooks:
        h.remove()
    return sum(total)


ms = median_ms({"modules": bnn, "modules, pruned": pruned, "fused": fused, "fused, pruned": fused_pruned}, images)
times = {form: (ms[form], ms[f"{form}, pruned"]) for form in ("modules", "fused")}
mac_ratio = macs(pruned, images) / macs(bnn, images)
fig, ax = plt.subplots(figsize=(6.5, 2.4))
for row, (form, (full, half)) in enumerate(times.items()):
    ax.barh(row + 0.2, full, height=0.38, color="C0", label="unpruned" if row == 0 else None)
    ax.barh(row - 0.2, half, height=0.38, color="C2", label="pruned by half" if row == 0 else None)
    ax.text(full, row + 0.2, f" {full:.0f} ms", va="center")
    ax.text(half, row - 0.2, f" {half:.0f} ms: {half / full:.2f} of the time", va="center")
ax.set_yticks(range(len(times)), list(times))
ax.set_xlabel(f"ms for {len(images)} images; pruning left {mac_ratio:.2f} of the MACs")
ax.set_xlim(0, 1.6 * max(max(t) for t in times.values()))
ax.legend(loc="upper right")
plt.show()

# %% [markdown]
# The time ratio stays above the MAC ratio. Pruning thins each block's inner width, but the residual stream (the
# sums, the next block's input quantization) keeps its width, and that elementwise work does not shrink.
#
# ## 4. Few filters, empty lanes: column folding
#
# A CPU multiplies vectors: with AVX-512, 16 float32 numbers at once. oneDNN's convolution fills a vector along the
# output filters, so a convolution with 8 filters leaves half of every vector empty and takes about as long as one
# with 16. The fix: compute $f$ **adjacent output columns** as $f$ times as many filters. Output column $f u + j$
# ($0 \le j < f$) of filter $c$ is
#
# $$ y_c[h, f u + j] = \sum_{c', p, r} W_c[c', p, r]\; x_{c'}[h + p, f u + j + r]
#    = \sum_{c', p, r'} W'_{(j, c)}[c', p, r']\; x_{c'}[h + p, f u + r'], $$
#
# a convolution with stride $f$ along the width whose filter $(j, c)$ is $W_c$ shifted $j$ columns right between
# zeros ($W'_{(j,c)}[\cdot, \cdot, r'] = W_c[\cdot, \cdot, r' - j]$, kernel width $k + f - 1$). In channels-last
# layout (channels innermost) its output *is* the plain output, byte for byte. Build it by hand for 8 filters:

# %%
cl = torch.channels_last
x = torch.randn(256 if not smoke else 32, 16, 28, 28).to(memory_format=cl)
W8 = torch.randn(8, 16, 3, 3)
W2, _ = fold_weight(W8, None, 2)  # 16 filters of width 4
print("folded weights:", tuple(W2.shape), "- filter 8 is filter 0 shifted one column:",
      torch.equal(W2[8, :, :, 1:], W8[0]), "and a zero column:", bool((W2[8, :, :, 0] == 0).all()))
plain = F.conv2d(x, W8.to(memory_format=cl), padding=1)
y = F.conv2d(x, W2.to(memory_format=cl), stride=(1, 2), padding=1)  # (n, 16, 28, 14)
n, _, h, w = y.shape
unfolded = y.permute(0, 2, 3, 1).reshape(n, h, 2 * w, 8).permute(0, 3, 1, 2)  # a view: nothing is copied
print("largest difference from the plain convolution:", float((unfolded - plain).abs().max()))

# %%
W16 = torch.randn(16, 16, 3, 3).to(memory_format=cl)
W8, W2 = W8.to(memory_format=cl), W2.to(memory_format=cl)
timed = median_ms({"16 filters": lambda: F.conv2d(x, W16, padding=1),
                   "8 filters": lambda: F.conv2d(x, W8, padding=1),
                   "8 filters, folded by 2": lambda: F.conv2d(x, W2, stride=(1, 2), padding=1)})
for name, t in timed.items():
    print(f"{name:>24}: {t:5.2f} ms")
print("this CPU:", torch.backends.cpu.get_cpu_capability(), "- fold_factors(8) here:", fold_factors(8))

# %% [markdown]
# On an AVX-512 machine the 8-filter convolution takes nearly as long as the 16-filter one, and the folded one
# less, although it does $4/3$ of the MACs (the zeros). `fuse_for_inference` folds every stride-1 convolution with at
# most 8 filters this way where `torch.backends.cpu.get_cpu_capability()` says AVX-512, by 4 where 4 filters or
# fewer fit; `fuse_for_inference(model, fold=False)` keeps the plain form. Elsewhere (AVX2, GPUs) it never folds:
# the gain was measured on AVX-512 only.
#
# ## Exercises
#
# 1. Fold a convolution of 3 filters by 4 by hand, as in section 4 (the input width, 28, is a multiple of 4), and
#    check it against the plain convolution.
# 2. Fold the 16-filter convolution by 2. Is it faster? Why not, on a 16-lane CPU?
# 3. Prune the DoReFa model by half, fuse it with and without folding, and compare the pruned/unpruned time ratios.
#    Which of its layers fold? (`[n for n, m in fused.named_modules() if getattr(m, "folds", ())]`)
#
# Each solution is a file beside this lesson, not run by *Run All*: to see one, type `%load solutions/T3_1.py` in a
# new cell and run that cell twice (the first run loads the code, the second runs it).

# %%
if solutions:  # the tests set this: every solution runs here, after the lesson
    for path in sorted(Path("solutions").glob("T3_*.py")):
        print(f"--- {path.name}")
        exec(compile(path.read_text(), str(path), "exec"))

# %% [markdown]
# ## Summary
#
# - A fused network computes once what the training form recomputes each time: quantized weights, BatchNorm and
#   scales folded into one convolution, DoReFa's inputs as integers.
# - Pruning saves time in proportion to the multiply-accumulates it removes only where the library's kernels stay
#   efficient: narrow layers leave vector lanes empty, which column folding refills.
# - Measure times interleaved and report medians: a shared machine is noisy.
#
# **Prerequisites**: lesson T1; convolution arithmetic. **References**: S. Zhou et al., *DoReFa-Net*,
# arXiv:1606.06160; B. Jacob et al., *Quantization and training of neural networks for efficient integer-arithmetic-
# only inference*, CVPR 2018 (folding BatchNorm); oneDNN's documentation on memory formats (channels-last);
# L. Guerra et al., arXiv:2002.00523.
