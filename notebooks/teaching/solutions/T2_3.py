# Solution 3: EI is large where the mean is high or the uncertainty is large. At the best point found the GP is
# sure (small std) and its mean is the best so far: little to gain. A random feasible point usually has a lower
# mean but a larger std; EI weighs both, and the printed values say which wins here.
with torch.no_grad():
    probe = torch.stack([x_bo[int(y_bo.argmax())], feasible_random(1, seed=7)[0]])
    post = gp.posterior(probe)
    ei = LogExpectedImprovement(gp, best_f=y_bo.max())(probe.unsqueeze(1)).exp()
for name, m, s, e in zip(("best point", "random point"), post.mean.flatten(), post.variance.sqrt().flatten(), ei):
    print(f"{name}: mean {float(m):.1f} %, std {float(s):.2f}, EI {float(e):.3g}")
print("EI would pick the", "best point" if float(ei[0]) > float(ei[1]) else "random point")
