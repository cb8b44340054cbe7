# Solution 2: three criteria at ratio 0.5, each measured after BatchNorm re-estimation on the same images.
for crit, options in (("redundancy", {}), ("bn_scale", {}), ("random", {"seed": 1})):
    m = prune(bnn, 0.5, crit, criterion_options=options)
    recalibrate_batchnorm(m, splits.train_eval, batches=5)
    print(f"{crit:>10}: {evaluate(m, val)['acc']:5.1f} %")
# One run of each on a few hundred images: the README's ablation (3 random seeds, 5,000 images) is the measurement.
