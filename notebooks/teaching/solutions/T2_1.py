# Solution 1: the same loop with an upper confidence bound, mean + sqrt(beta) * std. beta = 4 weighs the posterior's
# standard deviation more than EI does: the guided points spread wider (more exploration), and the best-so-far curve
# may rise later. The printed spreads say whether it did here.
from botorch.acquisition import UpperConfidenceBound

x_ucb, y_ucb, _ = bo_loop(lambda gp, x: UpperConfidenceBound(gp, beta=4.0), seed=0)  # trial 0's random start
fig, ax = plt.subplots(figsize=(7, 3.4))
ax.plot(steps, y_bo.cummax(0).values, "o-", label="LogEI (best so far)")
ax.plot(steps, y_ucb.cummax(0).values, "^-", label="UCB, beta = 4 (best so far)")
ax.set_xlabel("evaluations")
ax.set_ylabel("validation top-1 (%)")
ax.legend(loc="lower right")
plt.show()
spread = lambda x: float(x[n_init:].std(0).mean())  # noqa: E731 (how far apart the guided points lie)
print(f"best: LogEI {float(y_bo.max()):.1f} %, UCB {float(y_ucb.max()):.1f} %; spread of the guided points: "
      f"LogEI {spread(x_bo):.3f}, UCB {spread(x_ucb):.3f} (larger: more exploration)")
