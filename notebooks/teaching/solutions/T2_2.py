# Solution 2: at tau = 0.5 the feasible region is a thin slice of the cube near large ratios (its share of the cube
# is printed below). Random search draws uniformly in that slice, so most of its points prune some layer very hard;
# BO learns which layers tolerate pruning. One paired trial on a few hundred images decides little: the difference
# printed is one draw, to be read against the interval of the lesson's trials and notebook 4's seeds.
tau_before, constraint_before = tau, constraint
cube = torch.rand(20000, len(layers), generator=torch.Generator().manual_seed(0), dtype=torch.double)
share = {}
for t in (tau_before, 0.5):
    share[t] = float((cube @ (w / w.max()) >= t * size.base / w.max()).double().mean())
tau = 0.5
constraint = [(torch.arange(len(layers)), w / w.max(), float(tau * size.base / w.max()))]
_, y_bo50, _ = bo_loop(noisy_ei, seed=0)
_, y_rand50 = random_search(0, y_bo50[:n_init])
print(f"feasible share of the cube: {share[tau_before]:.1%} at tau = {tau_before}, {share[0.5]:.1%} at tau = 0.5")
print(f"tau = 0.5: BO {float(y_bo50.max()):.1f} %, random search {float(y_rand50.max()):.1f} % "
      f"(tau = {tau_before}, trial 0: BO {float(y_bo.max()):.1f} %, random {float(y_rand.max()):.1f} %)")
tau, constraint = tau_before, constraint_before  # the lesson's setting again
