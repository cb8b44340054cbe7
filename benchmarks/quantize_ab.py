"""Training step side by side in one process: the straight-through functions of another checkout's
``qrepro/quantize.py`` (A, "before") against this tree's (B), with the full-precision step as the
reference, interleaved so both see the same load; then whether the outputs are bitwise equal.

    python benchmarks/quantize_ab.py OTHER_QUANTIZE_PY [ROUNDS]
"""
import sys, time, statistics, torch, torch.nn.functional as F
import qrepro.quantize as qb
src = open(sys.argv[1]).read().replace("from .errors import", "from qrepro.errors import")
qa = type(sys)("qa"); sys.modules["qa"] = qa; exec(compile(src, "qa", "exec"), qa.__dict__)
from qrepro.models import build_model
torch.manual_seed(0)
x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
fp = build_model("resnet20", in_channels=1)
nets = {}
for scheme in ("bnn", "dorefa"):
    nets[scheme] = qb.quantize_model(fp, scheme)
nets["fp"] = fp
opts = {k: torch.optim.SGD(m.parameters(), lr=0.0) for k, m in nets.items()}
A = dict(_SignSTE=qa._SignSTE, sign_ste=qa.sign_ste, _ClipQuantizeSTE=qa._ClipQuantizeSTE)
B = dict(_SignSTE=qb._SignSTE, sign_ste=qb.sign_ste, _ClipQuantizeSTE=qb._ClipQuantizeSTE)
def use(d):
    for k, v in d.items(): setattr(qb, k, v)
def step(k):
    m = nets[k]; m.train(); loss = F.cross_entropy(m(x), y); opts[k].zero_grad(); loss.backward(); opts[k].step()
ts = {}
for _ in range(2):
    for k in nets: use(A); step(k); use(B); step(k)
for r in range(int(sys.argv[2]) if len(sys.argv) > 2 else 10):
    for k in nets:
        for lab, d in (("A", A), ("B", B)):
            if k == "fp" and lab == "B": continue
            use(d); t = time.perf_counter(); step(k); ts.setdefault((k, lab), []).append(time.perf_counter() - t)
med = {k: statistics.median(v) for k, v in ts.items()}
for k in ("bnn", "dorefa"):
    print(k, "ratio to fp: before %.2f after %.2f" % (med[("fp", "A")] / med[(k, "A")], med[("fp", "A")] / med[(k, "B")]))
# outputs identical?
torch.manual_seed(1); xx = torch.randn(64, 1, 28, 28)
for k in ("bnn", "dorefa"):
    use(A); oa = nets[k](xx); use(B); ob = nets[k](xx); print(k, "outputs bitwise equal", torch.equal(oa, ob))
