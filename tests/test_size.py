"""Model-size accounting against METHOD.md's reference values and hand counts."""
import pytest
import torch
import torch.nn as nn

from qrepro.models import resnet18, resnet20
from qrepro.prune import layer_view, prune_groups
from qrepro.quantize import quantize_model
from qrepro.size import MB, SizeConvention, model_size_bytes, size_breakdown
from qrepro.tables import duplicate_table

# ResNet-18's quantized convolutions (all but the stem) hold 4,736 filters; a per-filter
# scale is 4 bytes.  METHOD.md's reference sizes (3.32 / 3.36 MB) leave the scales out (they
# fold into the BatchNorm that follows), so they are checked with scale_bits=0, and the
# default convention, which counts them, must be exactly 4,736 x 4 bytes larger.
RESNET18_QUANT_FILTERS = 64 * 4 + 128 * 4 + 128 + 256 * 4 + 256 + 512 * 4 + 512
FOLDED = dict(scale_bits=0)


@pytest.mark.parametrize("scheme,bits,no_bn,with_bn", [("bnn", None, 3.32, 3.36), ("dorefa", 2, 4.65, 4.69)])
def test_resnet18_reference_sizes(scheme, bits, no_bn, with_bn):
    q = quantize_model(resnet18(), scheme, w_bits=bits, a_bits=bits)
    assert round(model_size_bytes(q, SizeConvention(include_bn=False, **FOLDED)) / MB, 2) == no_bn
    assert round(model_size_bytes(q, SizeConvention(**FOLDED)) / MB, 2) == with_bn


def test_default_convention_counts_per_filter_scales():
    q = quantize_model(resnet18(), "bnn")
    assert model_size_bytes(q) - model_size_bytes(q, SizeConvention(**FOLDED)) == RESNET18_QUANT_FILTERS * 4


def test_resnet20_bnn_size_by_hand():
    m = resnet20(in_channels=1)
    q = quantize_model(m, "bnn")
    convs = [mod for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d)]
    stem, rest = convs[0], convs[1:]
    q_weights = sum(c.weight.numel() for c in rest)
    filters = sum(c.out_channels for c in rest)
    bn_channels = sum(b.num_features for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    fc = m.fc.weight.numel() + m.fc.bias.numel()
    expected_bits = q_weights * 1 + 32 * (stem.weight.numel() + fc) + 32 * filters + 64 * bn_channels
    assert model_size_bytes(q) == expected_bits / 8
    df = size_breakdown(q)
    assert set(df.columns) >= {"layer", "kind", "params", "bytes", "MB"}
    assert "MB = 2^20" in df.attrs["convention"]


def test_full_precision_size_is_32_bits_per_parameter():
    m = resnet20()
    n = sum(p.numel() for p in m.parameters())
    assert model_size_bytes(m) == 4 * n  # BN counts gamma and beta: exactly its parameters


@pytest.mark.parametrize("scheme", ["bnn", "dorefa"])
def test_duplicate_table_counts_what_comparing_every_pair_of_codes_counts(scheme):
    """The filter-duplicates table (equal codes counted by matrix products) against the direct (N, N, length)
    comparison, with duplicates planted: one exact copy and one copy with a tenth of its codes changed."""
    torch.manual_seed(0)
    bits = 2 if scheme == "dorefa" else None
    model = quantize_model(resnet20(num_classes=10, in_channels=1), scheme, w_bits=bits, a_bits=bits)
    w = model.layer1[0].conv1.weight.data
    w[1] = w[0]
    w[3] = w[2]
    w[3].view(-1)[: w[3].numel() // 10] *= -1
    table = duplicate_table(model).set_index("layer")
    for name, g in prune_groups(model, "block").items():
        c = layer_view(model, g).codes
        differ = (c[:, None, :] != c[None, :, :]).double().mean(-1)
        differ.fill_diagonal_(float("inf"))
        nn = differ.min(1).values
        row = table.loc[name]
        assert row.exact_duplicates == int((nn == 0).sum())
        assert row["near_duplicates(<=0.25)"] == int((nn <= 0.25).sum())
        assert row.mean_nn_differing == float(nn.mean())
    assert table.loc[next(iter(prune_groups(model, "block")))].exact_duplicates >= 2
