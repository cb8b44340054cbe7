# Solution 3: ||alpha_i sign(w_i)||_1 = D alpha_i = ||w_i||_1, so L1 after binarization is L1 on the latent weights:
# it ranks filters by their latent magnitude and never looks at the binary pattern.
conv = bnn.get_submodule("layer2.1.conv1")
deployed = conv.quantized_weight().detach().abs().flatten(1).sum(1)
latent = conv.weight.detach().abs().flatten(1).sum(1)
print("largest difference between the deployed and the latent L1 norms:", float((deployed - latent).abs().max()))
