# Solution 1: a budget on bit-operations beside the size budget: at most 80 % of the 2-bit model's BOPs. BOPs
# shrink with the square of the bit-width (weights and inputs), size only linearly, and the full-precision stem's
# share cannot shrink at all (exercise 2): few draws with 4- or 8-bit blocks fit, so the random starts draw 1 or 2
# bits per block.
bops_budget = 0.8 * cost.bops_base


def bops_constraint(bits):
    const, coef = cost.linear(bits.unsqueeze(0), "bops", r_max)  # bops <= const - coef @ r
    a = coef[0] * r_max
    return [(torch.arange(d), a / a.max(), float((const[0] - bops_budget) / a.max()))]


def size_constraint(bits):  # both budgets from now on: joint_bo passes this list to optimize_acqf
    const, coef = cost.linear(bits.unsqueeze(0), "size", r_max)
    a = coef[0] * r_max
    return [(torch.arange(d), a / a.max(), float((const[0] - budget_bytes) / a.max()))] + bops_constraint(bits)


def feasible(x):
    r, b = decode(x)
    ok = True
    for what, most in (("size", budget_bytes), ("bops", bops_budget)):
        const, coef = cost.linear(b.unsqueeze(0), what, r_max)
        ok = ok and float(const[0] - coef[0] @ r) <= most
    return ok


x_bops, y_bops = joint_bo(allowed=(1, 2))  # random starts at 1 or 2 bits: few others fit
r, b = decode(x_bops[int(y_bops.argmax())])
print(f"best with both budgets: {float(y_bops.max()):.1f} % (size only: {float(y_bo.max()):.1f} %)")
print(pd.DataFrame({"block": [n.replace(".conv1", "") for n in layers], "bits": b.int().tolist(),
                    "ratio": r.round(decimals=2).tolist()}).set_index("block").T)
