# Solution 3: EI is large where the mean is high or the uncertainty is large. At the best point found the GP is
# fairly sure (small std) and its mean is near the bar (the best posterior mean): little to gain. A random feasible
# point usually has a lower mean but a larger std; EI weighs both, and the printed values say which wins here.
seen = x_bo[: len(x_bo) - 1]  # what the last GP was fitted on
with torch.no_grad():
    probe = torch.stack([x_bo[int(y_bo.argmax())], feasible_random(1, seed=7)[0]])
    post = gp.posterior(probe)
    ei = noisy_ei(gp, seen)(probe.unsqueeze(1)).exp()
for name, m, s, e in zip(("best point", "random point"), post.mean.flatten(), post.variance.sqrt().flatten(), ei):
    print(f"{name}: mean {float(m):.1f} %, std {float(s):.2f}, EI {float(e):.3g}")
print("EI would pick the", "best point" if float(ei[0]) > float(ei[1]) else "random point")
