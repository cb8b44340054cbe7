# Solution 2: each layer's share of the 2-bit model's BOPs. The full-precision stem (32 x 32 bit-operations per
# MAC, at the full resolution) outweighs every quantized layer: a BOPs budget mostly measures the stem, which is why
# papers that count BOPs often quantize the first layer to 8 bits.
share = pd.DataFrame([{"layer": t["name"], "MACs (M)": t["macs"] / 1e6,
                       "bits w x a": f"{t['w_bits']} x {t['a_bits']}",
                       "share of BOPs (%)": 100 * t["macs"] * t["w_bits"] * t["a_bits"] / cost.bops_base}
                      for t in cost.terms])
print(share.sort_values("share of BOPs (%)", ascending=False).head(5).round(2).to_string(index=False))
