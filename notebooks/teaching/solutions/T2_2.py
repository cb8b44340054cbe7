# Solution 2: at tau = 0.5 the feasible region is a thin slice of the cube near large ratios. Random search draws
# uniformly in it, so most of its points prune some layer very hard; BO learns which layers tolerate pruning.
# One seed on a few hundred images decides little: compare the numbers below with notebook 4's two seeds.
tau_before, constraint_before = tau, constraint
tau = 0.5
constraint = [(torch.arange(len(layers)), w / w.max(), float(tau * size.base / w.max()))]
_, y_bo50, _ = bo_loop(lambda gp, y: LogExpectedImprovement(gp, best_f=y.max()))
y_rand50 = torch.tensor([[evaluate(x)] for x in feasible_random(budget, seed=2)], dtype=torch.double)
print(f"tau = 0.5: BO {float(y_bo50.max()):.1f} %, random search {float(y_rand50.max()):.1f} % "
      f"(tau = {tau_before}: BO {float(y_bo.max()):.1f} %, random {float(y_rand.max()):.1f} %)")
tau, constraint = tau_before, constraint_before  # the lesson's setting again
