"""qrepro: pruning quantized neural networks, after Guerra, Zhuang, Reid and Drummond,
*Automatic Pruning for Quantized Neural Networks*, arXiv:2002.00523 (2020).

The paper's full text is not reproduced here; where it is silent, this package makes
its own choices, each a parameter (see ``README.md`` and ``../shared/spec/METHOD.md``).
"""
__version__ = "0.1.0"

import warnings

# Noise that says nothing to a reader: tqdm falls back to a text bar without ipywidgets, and torch
# deprecates torch.jit.script, which gpytorch still calls at import.
warnings.filterwarnings("ignore", message="IProgress not found")
warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)

from .quantize import (  # noqa: F401
                       binarize_activation,
                       binarize_weight,
                       dorefa_activation,
                       dorefa_weight,
                       quantize_model,
                       ternarize_weight,
)
from .size import model_size_bytes, size_breakdown  # noqa: F401
