"""A packed, deployable file for a (pruned) quantized model: the proof of the sizes printed.

Layout: ``b"QRPK"``, a little-endian uint32 header length, a zlib-compressed JSON header
(architecture, quantization, pruning record with the kept-filter indices, config), then
one blob with, for every layer in ``named_modules`` order:

* quantized conv / linear: the codes at ``k`` bits per weight, as the layer's quantizer gives them
  (``WeightQuantizer.levels``; binary: ``0`` for -1 and ``1`` for +1; k-bit: the levels ``0 .. 2^k-1``;
  ternary: 0, 1, 2 for -1, 0, +1), the frozen scales (float32) and the bias (float32) if any;
* full-precision conv / linear: weight and bias as float32;
* BatchNorm: two float32 per channel, ``a = gamma / sqrt(var + eps)`` and
  ``b = beta - mean a`` (the folded affine map; the size convention counts 2 per channel).

Loading rebuilds the architecture, applies the kept indices, and writes latent weights
that quantize back to the stored codes under the stored (frozen) scales.
"""
from __future__ import annotations

import copy
import hashlib
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .cache import record_digest, write_bytes_atomic
from .checkpoint import UNVERIFIED, CheckpointError, model_description, rebuild
from .quantize import is_quantized

MAGIC = b"QRPK"
VERSION = 3  # 3: header_sha256 covers the header; 2: blob_sha256 covers the data blob; 1: neither
READABLE = (1, 2, 3)


def pack_bits(levels: np.ndarray, bits: int) -> bytes:
    """Pack integers in ``[0, 2^bits)`` at ``bits`` bits each (bit-planes, most significant first)."""
    levels = levels.astype(np.uint32).ravel()
    planes = [((levels >> (bits - 1 - b)) & 1).astype(np.uint8) for b in range(bits)]
    return b"".join(np.packbits(p).tobytes() for p in planes)


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    plane_bytes = (count + 7) // 8
    out = np.zeros(count, dtype=np.uint32)
    for b in range(bits):
        plane = np.unpackbits(np.frombuffer(data[b * plane_bytes:(b + 1) * plane_bytes], dtype=np.uint8))[:count]
        out |= plane.astype(np.uint32) << (bits - 1 - b)
    return out


def packed_nbytes(count: int, bits: int) -> int:
    return bits * ((count + 7) // 8)


def _f32(t: torch.Tensor) -> bytes:
    return t.detach().cpu().float().numpy().astype("<f4").tobytes()


def _layer_records(model: nn.Module):
    """The layers that hold stored numbers, in ``named_modules`` order (quantized layers are
    ``nn.Conv2d`` / ``nn.Linear`` subclasses)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)):
            yield m


def save_packed(path: str | Path, model: nn.Module, config: dict | None = None) -> Path:
    """Write ``model`` packed (see module docstring).  Scales are frozen first if they were not."""
    path = Path(path)
    model = copy.deepcopy(model)  # freezing scales must not touch the caller's model
    chunks = []
    for m in _layer_records(model):
        if is_quantized(m):
            if not m.is_frozen:
                m.freeze_scale()
            levels = m.spec.weight_quantizer.levels(m.weight_codes(), m.spec).cpu().numpy().astype(np.uint32)
            chunks += [pack_bits(levels, m.spec.w_bits), _f32(m.w_scale)]
            if m.bias is not None:
                chunks.append(_f32(m.bias))
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            chunks.append(_f32(m.weight))
            if m.bias is not None:
                chunks.append(_f32(m.bias))
        else:
            a = m.weight.detach().double() / torch.sqrt(m.running_var.double() + m.eps)
            b = m.bias.detach().double() - m.running_mean.double() * a
            chunks += [_f32(a), _f32(b)]
    blob = b"".join(chunks)
    header = {"version": VERSION, **model_description(model), "pruned": getattr(model, "pruned", None),
              "config": config or {}, "blob_sha256": hashlib.sha256(blob).hexdigest()}
    header["header_sha256"] = record_digest(header)
    head = zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9)
    write_bytes_atomic(path, MAGIC + struct.pack("<I", len(head)) + head + blob)
    return path


def load_packed(path: str | Path, trust_unverified: bool = False) -> tuple[nn.Module, dict]:
    """Rebuild the model :func:`save_packed` wrote; returns ``(model, header)``.  A file without
    both checksums (an older version, or a removed field) is refused unless ``trust_unverified``
    (for a file verified another way, such as by a results folder's manifest)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise CheckpointError(f"packed model {path} does not exist") from err
    if raw[:4] != MAGIC:
        raise CheckpointError(f"{path} is not a packed qrepro model (magic {raw[:4]!r})")
    try:
        (n,) = struct.unpack("<I", raw[4:8])
        header = json.loads(zlib.decompress(raw[8:8 + n]))
    except (struct.error, zlib.error, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt header ({err}); re-export the model") from None
    if not isinstance(header, dict) or header.get("version") not in READABLE:
        raise CheckpointError(f"{path}: packed format version {header.get('version') if isinstance(header, dict) else '?'}"
                              f" is not one this qrepro reads ({READABLE}); re-export the model")
    blob, pos = raw[8 + n:], 0
    missing = [name for name in ("blob_sha256", "header_sha256") if name not in header]
    if missing and not trust_unverified:
        raise CheckpointError(f"{path} (packed format {header['version']}) has no {' or '.join(missing)}, so it "
                              f"cannot be verified; {UNVERIFIED}")
    if "header_sha256" in header and \
            record_digest({k: v for k, v in header.items() if k != "header_sha256"}) != header["header_sha256"]:
        raise CheckpointError(f"{path}: the header does not match its checksum (the file was edited); "
                              "re-export the model")
    if "blob_sha256" in header and hashlib.sha256(blob).hexdigest() != header["blob_sha256"]:
        raise CheckpointError(f"{path}: the data does not match its checksum (the file is corrupt or was edited); "
                              "re-export the model")
    edited = ("the data blob matches its checksum, so the header was edited or is inconsistent"
              if "blob_sha256" in header else "the file does not match its header")
    try:
        model = rebuild(header["arch"], header["quant"], header.get("pruned"))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: the header does not describe a model this qrepro builds ({err}); "
                              "re-export the model") from None

    def take(nbytes: int) -> bytes:
        nonlocal pos
        if pos + nbytes > len(blob):
            raise CheckpointError(f"{path}: needs {pos + nbytes} bytes of data, has {len(blob)}: {edited}; "
                                  "re-export the model")
        pos += nbytes
        return blob[pos - nbytes:pos]

    def floats(like: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(take(4 * like.numel()), dtype="<f4").copy()).view_as(like)

    with torch.no_grad():
        for m in _layer_records(model):
            if is_quantized(m):
                k = m.spec.w_bits
                levels = unpack_bits(take(packed_nbytes(m.weight.numel(), k)), k, m.weight.numel())
                levels = torch.from_numpy(levels.astype(np.float64)).view(m.weight.shape)
                m.set_frozen_scale(floats(m.w_scale))
                m.weight.copy_(m.spec.weight_quantizer.latent(levels, m.spec, m.w_scale).float())
                if m.bias is not None:
                    m.bias.copy_(floats(m.bias))
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(floats(m.weight))
                if m.bias is not None:
                    m.bias.copy_(floats(m.bias))
            else:
                m.weight.copy_(floats(m.weight))
                m.bias.copy_(floats(m.bias))
                m.running_mean.zero_()
                m.running_var.fill_(1.0 - m.eps)  # so that (x - 0) / sqrt(var + eps) = x
    if pos != len(blob):
        raise CheckpointError(f"{path}: {len(blob) - pos} bytes left over: {edited}; re-export the model")
    model.eval()
    return model, header
