"""Quantizers against their formulas, computed independently with NumPy on hand-checked tensors."""
import copy

import numpy as np
import pytest
import torch

from qrepro.models import count_parameters, resnet18, resnet20
from qrepro.quantize import (
    QConv2d,
    QLinear,
    QuantSpec,
    binarize_activation,
    binarize_weight,
    dorefa_activation,
    dorefa_weight,
    make_spec,
    quantize_model,
)


def test_binarize_weight_hand_checked():
    w = torch.tensor([[0.5, -0.25, 0.0, 1.25], [-2.0, 1.0, -1.0, 0.0]])
    # filter 0: mean|w| = 2.0/4 = 0.5; filter 1: 4.0/4 = 1.0; sign(0) = +1
    expected = torch.tensor([[0.5, -0.5, 0.5, 0.5], [-1.0, 1.0, -1.0, 1.0]])
    assert torch.equal(binarize_weight(w, "filter"), expected)
    # layer: mean|w| = 6/8 = 0.75
    assert torch.equal(binarize_weight(w, "layer"), torch.sign(expected) * 0.75)
    assert torch.equal(binarize_weight(w, "none"), torch.sign(expected))


def test_binary_values_are_plus_minus_scale():
    w = torch.randn(8, 4, 3, 3)
    wb = binarize_weight(w, "filter")
    alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    codes = wb / alpha
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert torch.allclose(codes.abs(), torch.ones_like(codes))
    a = binarize_activation(torch.tensor([-0.3, 0.0, 2.0]))
    assert a.tolist() == [-1.0, 1.0, 1.0]


def test_sign_straight_through_gradient():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.7, 1.0, 1.5], requires_grad=True)
    g = torch.arange(1.0, 8.0)
    binarize_activation(x).backward(g)
    expected = g * torch.tensor([0, 1, 1, 1, 1, 1, 0.0])
    assert torch.equal(x.grad, expected)


def test_binarize_weight_gradient_matches_xnor_formula():
    torch.manual_seed(1)
    w = (torch.randn(3, 5) * 1.2).requires_grad_()
    g = torch.randn(3, 5)
    binarize_weight(w, "filter").backward(g)
    wn, gn = w.detach().numpy(), g.numpy()
    n = wn.shape[1]
    s = np.where(wn >= 0, 1.0, -1.0)
    alpha = np.abs(wn).mean(1, keepdims=True)
    # d/dw_j [alpha * sign(w_i)]: alpha * 1_{|w_j|<=1} * g_j + sign(w_j)/n * sum_i g_i sign(w_i)
    ref = alpha * (np.abs(wn) <= 1) * gn + s / n * (gn * s).sum(1, keepdims=True)
    np.testing.assert_allclose(w.grad.numpy(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_dorefa_weight_formula_and_levels(bits):
    torch.manual_seed(bits)
    w = torch.randn(64, 16, 3, 3) * 2
    wq = dorefa_weight(w, bits)
    t = np.tanh(w.numpy())
    n = 2**bits - 1
    ref = 2 * np.round(n * (t / (2 * np.abs(t).max()) + 0.5)) / n - 1
    np.testing.assert_allclose(wq.numpy(), ref, atol=1e-6)
    assert len(wq.unique()) == 2**bits
    assert wq.min() == -1 and wq.max() == 1


def test_dorefa_weight_hand_checked_two_bits():
    # tanh(w) = [-0.5, 0, 0.2, 0.5] approximately; max|tanh| = 0.5 -> r = [0, .5, .7, 1]
    w = torch.atanh(torch.tensor([-0.5, 0.0, 0.2, 0.5]))
    # quantize_2(r) = round(3r)/3 = [0, 2/3 (round(1.5)=2), 2/3 (round(2.1)=2), 1]
    expected = torch.tensor([-1.0, 1 / 3, 1 / 3, 1.0])
    assert torch.allclose(dorefa_weight(w, 2), expected, atol=1e-6)


def test_dorefa_one_bit_weight():
    w = torch.tensor([0.5, -1.5, 0.0, 2.0])
    assert torch.equal(dorefa_weight(w, 1), torch.tensor([1.0, -1.0, 1.0, 1.0]))


def test_dorefa_one_bit_gradient_is_the_authors_identity():
    # tensorpack's DoReFa-Net (quantize_weight, bitW == 1): E = stop_gradient(mean|w|), forward
    # E * sign(w / E) with sign's gradient the identity, so dL/dw = dL/dw_q everywhere, |w| > 1 included
    w = torch.tensor([0.5, -1.5, 0.0, 2.0, -0.01], requires_grad=True)
    g = torch.tensor([0.3, -0.7, 1.1, 2.0, -4.0])
    dorefa_weight(w, 1).backward(g)
    assert torch.equal(w.grad, g)
    w.grad = None
    dorefa_weight(w, 1, scale=torch.tensor(0.8)).backward(g)  # a frozen scale: the same gradient
    assert torch.equal(w.grad, g)


def test_dorefa_weight_gradient_is_straight_through():
    torch.manual_seed(2)
    w = torch.randn(4, 6, requires_grad=True)
    g = torch.randn(4, 6)
    dorefa_weight(w, 2).backward(g)
    # round -> identity: w_q = 2 (tanh(w)/(2M) + 1/2) - 1 = tanh(w) / M, M = max|tanh(w)|
    w2 = w.detach().clone().requires_grad_()
    (torch.tanh(w2) / torch.tanh(w2).abs().max()).backward(g)
    assert torch.allclose(w.grad, w2.grad, atol=1e-6)


def test_dorefa_activation_formula_and_gradient():
    x = torch.tensor([-0.4, 0.1, 0.2, 0.5, 0.9, 1.3], requires_grad=True)
    y = dorefa_activation(x, 2)
    assert torch.allclose(y, torch.tensor([0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0]), atol=1e-6)
    y.backward(torch.ones_like(y))
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert len(dorefa_activation(torch.linspace(-1, 2, 1000), 3).unique()) == 8


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_dorefa_activation_gradient_passes_on_the_closed_interval(dtype, device):
    """Reference: the gradient of TensorFlow's ``clip_by_value`` in the DoReFa authors' code, zero only
    where ``x < 0`` or ``x > 1``, at the bounds themselves, signed zeros, subnormals and the floats next
    to 0 and 1. (``torch.clamp`` with scalar bounds passes nothing at the bounds themselves.)"""
    info = torch.finfo(dtype)
    sub = info.smallest_normal * info.eps
    one = torch.tensor(1.0, dtype=dtype)
    near = [-0.0, 0.0, sub, -sub, info.smallest_normal, -info.smallest_normal, 1.0,
            torch.nextafter(one, one * 2).item(), torch.nextafter(one, one * 0).item(), -1.0, 0.5, 2.0]
    x = torch.cat([torch.tensor(near, dtype=dtype), torch.randn(200, dtype=dtype)]).to(device).requires_grad_()
    g = torch.randn_like(x)
    dorefa_activation(x, 2).backward(g)
    xd = x.detach()
    assert torch.equal(x.grad, torch.where((xd < 0) | (xd > 1), torch.zeros_like(g), g))
    assert x.grad[:12].ne(0).tolist() == [True, True, True, False, True, False, True, False, True, False, True, False]


def test_dorefa_activation_after_a_relu_saves_nothing_new():
    """The quantizer keeps its input for the backward; after a ReLU that is the tensor the ReLU keeps."""
    saved = []

    def pack(t):
        saved.append(t.untyped_storage().data_ptr())
        return t

    x = torch.randn(4, 8, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        dorefa_activation(torch.relu(x), 2).sum().backward()
    assert len(saved) == 2 and len(set(saved)) == 1


@pytest.mark.parametrize("bad", [0, -1, 33, 2.5, "2", None, True])
def test_bad_bit_widths(bad):
    with pytest.raises(ValueError, match="1 to 32"):
        dorefa_weight(torch.randn(3), bad)
    with pytest.raises(ValueError, match="1 to 32"):
        dorefa_activation(torch.randn(3), bad)


def test_bad_scheme_and_scaling():
    with pytest.raises(ValueError, match="bnn, dorefa, ternary"):
        make_spec("quaternary")
    with pytest.raises(ValueError, match="filter, layer, none"):
        binarize_weight(torch.randn(2, 2), "channel")
    with pytest.raises(ValueError, match="1 to 32"):
        quantize_model(resnet20(), "dorefa", w_bits=0)
    with pytest.raises(ValueError, match="1-bit"):
        quantize_model(resnet20(), "bnn", w_bits=2)
    with pytest.raises(ValueError, match="registered"):
        QuantSpec(weight="quaternary")


def test_resnet20_parameter_count():
    # He et al.'s ResNet-20 with option-A shortcuts has 269,722 parameters; our projection (option B)
    # shortcuts add two 1x1 convolutions with BatchNorm: 16*32 + 2*32 + 32*64 + 2*64 = 2,752.
    assert count_parameters(resnet20()) == 269_722 + 2_752 - 0  # 3-channel input, 10 classes
    assert count_parameters(resnet20(in_channels=1)) == 272_474 - 2 * 16 * 9


@pytest.mark.parametrize("scheme,bits", [("bnn", None), ("dorefa", 2)])
@pytest.mark.parametrize("builder", [resnet20, resnet18])
def test_quantize_model_keeps_first_and_last_full_precision(builder, scheme, bits):
    model = builder()
    q = quantize_model(model, scheme, w_bits=bits, a_bits=bits)
    convs = [(n, m) for n, m in q.named_modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [(n, m) for n, m in q.named_modules() if isinstance(m, torch.nn.Linear)]
    assert convs[0][0] == "conv1" and not isinstance(convs[0][1], QConv2d)
    assert all(isinstance(m, QConv2d) for _, m in convs[1:])
    assert linears[-1][0] == "fc" and not isinstance(linears[-1][1], QLinear)
    # latent weights copied; the input model is untouched
    assert torch.equal(q.layer1[0].conv1.weight, model.layer1[0].conv1.weight)
    assert not isinstance(model.layer1[0].conv1, QConv2d)
    relus = [m for m in q.modules() if isinstance(m, torch.nn.ReLU)]
    assert (len(relus) == 0) == (scheme == "bnn")


def test_quantized_conv_computes_conv_of_quantized_operands():
    torch.manual_seed(3)
    conv = QConv2d(4, 6, 3, padding=1, bias=False, spec=make_spec("dorefa", 2, 2))
    x = torch.rand(2, 4, 5, 5) * 1.5
    ref = torch.nn.functional.conv2d(dorefa_activation(x, 2), dorefa_weight(conv.weight, 2), padding=1)
    assert torch.allclose(conv(x), ref)


@pytest.mark.parametrize("scheme", ["bnn", "dorefa"])
def test_quantized_layers_compile_without_graph_breaks(scheme):
    import torch._dynamo as dynamo

    from qrepro.prune import prune

    model = quantize_model(resnet20(in_channels=1), scheme)
    x = torch.randn(2, 1, 28, 28)
    for m in (model.train(), prune(model, 0.5).eval()):  # training (latent scales), pruned (frozen scales)
        dynamo.reset()
        explained = dynamo.explain(m)(x)
        assert explained.graph_break_count == 0, [str(r.reason)[:200] for r in explained.break_reasons]
    dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["bnn", "dorefa"])
def test_compiled_training_step_computes_what_eager_does_in_float64(scheme):
    """The compiled training path (``TrainConfig.compile``) is the same function as eager: in float64 logits and
    every gradient agree to 1e-9.

    The BatchNorms' affine terms are drawn away from their initial (1, 0) first. At (1, 0) a DoReFa
    network has exact ties: its quantized weights and activations make a convolution's output a
    small rational number that can equal its channel's batch mean exactly, so a ReLU or a clip sees
    exactly 0, and the summation order decides the side. Eager itself then gives gradients that
    differ by 0.27-0.33 in the first convolution between NCHW and channels-last layouts, as much as
    the compiled step does (``benchmarks/benchmark.py --sections compile``, its float64 table).  In
    float32 a reordered sum lands on the other side of a sign's or a round's threshold now and then
    (1 DoReFa level of 800,000 in one of ResNet-20's blocks compiled alone); training-mode
    BatchNorm carries each such step to every image, so float32 runs drift apart."""
    torch.manual_seed(0)
    eager = quantize_model(resnet20(in_channels=1), scheme).double().train()
    for m in eager.modules():  # away from the ties of BatchNorm's initial affine terms
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.3)
    compiled = copy.deepcopy(eager)
    x, y = torch.randn(8, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (8,))
    grads = []
    for m, fn in ((eager, eager), (compiled, torch.compile(compiled))):
        logits = fn(x)
        torch.nn.functional.cross_entropy(logits, y).backward()
        grads.append((logits.detach(), {n: p.grad for n, p in m.named_parameters()}))
    (le, ge), (lc, gc) = grads
    assert torch.allclose(le, lc, rtol=0, atol=1e-9), float((le - lc).abs().max())
    for n in ge:
        assert torch.allclose(ge[n], gc[n], rtol=0, atol=1e-9), (n, float((ge[n] - gc[n]).abs().max()))
