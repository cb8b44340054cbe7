# Solution 3: the pruned DoReFa model fused with and without folding
pruned_dorefa = prune(dorefa, 0.5, "redundancy").eval()
nets = {(fold, model): fuse_for_inference(m, fold=fold) for fold in (True, False)
        for model, m in (("full", dorefa), ("half", pruned_dorefa))}
t = median_ms(nets, images)
for fold in (True, False):
    print(f"fold={fold}: time ratio {t[fold, 'half'] / t[fold, 'full']:.2f}; folded layers:",
          [n for n, m in nets[fold, "half"].named_modules() if getattr(m, "folds", ())])
