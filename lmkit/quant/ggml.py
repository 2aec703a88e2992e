"""llama.cpp (ggml) block formats, byte for byte: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K.

A ggml row of ``n`` floats is cut into blocks; each block is stored as a fixed number of bytes:

| type | block | bytes | layout (little-endian), value                               | bits/weight |
|------|-------|-------|-------------------------------------------------------------|-------------|
| Q4_0 | 32    | 18    | fp16 d, 16 B nibbles; x = d (q - 8)                         | 4.5         |
| Q4_1 | 32    | 20    | fp16 d, fp16 m, 16 B nibbles; x = d q + m                   | 5.0         |
| Q5_0 | 32    | 22    | fp16 d, u32 fifth bits, 16 B nibbles; x = d (q - 16)        | 5.5         |
| Q5_1 | 32    | 24    | fp16 d, fp16 m, u32 fifth bits, 16 B nibbles; x = d q + m   | 6.0         |
| Q8_0 | 32    | 34    | fp16 d, 32 int8; x = d q                                    | 8.5         |
| Q4_K | 256   | 144   | fp16 d, fp16 dmin, 12 B of 6-bit (sc, m) x 8, 128 B nibbles | 4.5         |
| Q6_K | 256   | 210   | 128 B low nibbles, 64 B high 2 bits, 16 int8 sc, fp16 d     | 6.5625      |

Q4_K: x = d·sc_j·q − dmin·m_j for sub-block j of 32. Q6_K: x = d·sc_j·(q − 32) for sub-block j of 16.

In the 32-element formats, byte ``j`` of the nibbles holds element ``j`` (low nibble) and element
``j + 16`` (high nibble). The "K-quants" are two-level: a 256-element super-block has one fp16
scale, and each sub-block's own scale is quantized against it (6 bits in Q4_K, 8 bits in Q6_K).

Quantization follows llama.cpp's reference functions (``quantize_row_*_ref`` in ``ggml-quants.c``,
no importance matrix), reproducing their float32 arithmetic step by step (sequential sums,
round-half-to-even ``nearest_int``, truncating casts), so the bytes are identical: the tests
compare them with ``gguf.quants`` (which can quantize the 32-element formats) and, for Q4_K/Q6_K,
with ggml's own ``ggml_quantize_chunk`` from llama-cpp-python. Everything here is NumPy on
``(rows, n)`` float32 arrays; ``n`` must be a multiple of the block size (rows are never padded:
GGUF rows cannot be). :func:`quantize_ggml` / :func:`dequantize_ggml` wrap it in the
:class:`~lmkit.quant.base.QuantizedTensor` interface, and :func:`read_tensor` reads any tensor of
a GGUF file (F32, F16, BF16 and the types above).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lmkit.quant.base import QuantizedTensor, check_finite, register

QK_K = 256
F32 = np.float32

# name -> (ggml type id, elements per block, bytes per block); ids are ggml's enum values.
TYPES: dict[str, tuple[int, int, int]] = {
    "F32": (0, 1, 4),
    "F16": (1, 1, 2),
    "Q4_0": (2, 32, 18),
    "Q4_1": (3, 32, 20),
    "Q5_0": (6, 32, 22),
    "Q5_1": (7, 32, 24),
    "Q8_0": (8, 32, 34),
    "Q4_K": (12, QK_K, 144),
    "Q6_K": (14, QK_K, 210),
    "BF16": (30, 1, 2),
}
NAMES_BY_ID = {v[0]: k for k, v in TYPES.items()}


def type_name(qtype: str | int) -> str:
    """Normalise a ggml type given by name (``"Q4_K"``), id (12) or enum member; unknown -> ValueError."""
    if hasattr(qtype, "name") and hasattr(qtype, "value"):  # a gguf.GGMLQuantizationType member
        qtype = int(qtype.value)
    if isinstance(qtype, (int, np.integer)):
        if int(qtype) not in NAMES_BY_ID:
            raise ValueError(f"unknown or unsupported GGUF tensor type id {int(qtype)}; supported: {sorted(TYPES)}")
        return NAMES_BY_ID[int(qtype)]
    if qtype not in TYPES:
        raise ValueError(f"unknown or unsupported GGUF tensor type {qtype!r}; supported: {sorted(TYPES)}")
    return qtype


def bits_per_weight(qtype: str | int) -> float:
    _, block, size = TYPES[type_name(qtype)]
    return 8.0 * size / block


# ---------------------------------------------------------------------------------------------
# helpers that reproduce ggml's scalar C arithmetic
# ---------------------------------------------------------------------------------------------


def _seqsum(a: np.ndarray) -> np.ndarray:
    """Sum over the last axis strictly left to right in float32, like a C ``for`` loop (NumPy's
    ``sum`` is pairwise and would round differently)."""
    return np.add.accumulate(a, axis=-1, dtype=F32)[..., -1]


def _nearest_int(x: np.ndarray) -> np.ndarray:
    """ggml's ``nearest_int``: round half to even (it adds 1.5·2^23 in float32)."""
    return np.rint(x).astype(np.int32)


def _fp16_bytes(x: np.ndarray) -> np.ndarray:
    """float32 (N,) -> (N, 2) bytes of the fp16 value (round to nearest even, like GGML_FP32_TO_FP16)."""
    return np.ascontiguousarray(x.astype(np.float16).reshape(-1, 1)).view(np.uint8)


def _fp16_from(b: np.ndarray) -> np.ndarray:
    """(N, 2) bytes -> (N, 1) float32."""
    return np.ascontiguousarray(b).view(np.float16).astype(F32)


def _pack_low_high(q: np.ndarray) -> np.ndarray:
    """(N, 32) codes -> (N, 16) bytes: element j in the low nibble, element j+16 in the high nibble."""
    return (q[:, :16] & 0x0F) | ((q[:, 16:] & 0x0F) << 4)


def _unpack_low_high(qs: np.ndarray) -> np.ndarray:
    """(N, 16) bytes -> (N, 32) nibbles in element order."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _high_bits(q: np.ndarray) -> np.ndarray:
    """Fifth bit of 32 codes -> (N, 4) bytes of a little-endian u32 (bit j = element j)."""
    bits = ((q >> 4) & 1).astype(np.uint32)
    qh = (bits << np.arange(32, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
    return np.ascontiguousarray(qh.astype("<u4").reshape(-1, 1)).view(np.uint8)


def _from_high_bits(qh: np.ndarray) -> np.ndarray:
    u = np.ascontiguousarray(qh).view("<u4").astype(np.uint32)  # (N, 1)
    return ((u >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)


def _signed_absmax(x: np.ndarray) -> np.ndarray:
    """The element with the largest |x| (the first one on ties), keeping its sign: (N, n) -> (N, 1)."""
    return np.take_along_axis(x, np.abs(x).argmax(axis=1)[:, None], axis=1)


def _inverse(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d == 0, F32(0), F32(1) / d).astype(F32)


# ---------------------------------------------------------------------------------------------
# 32-element formats
# ---------------------------------------------------------------------------------------------


def _q4_0(x: np.ndarray) -> np.ndarray:
    d = (_signed_absmax(x) / F32(-8)).astype(F32)
    q = np.minimum(np.trunc(x * _inverse(d) + F32(8.5)), 15).astype(np.uint8)
    return np.concatenate([_fp16_bytes(d), _pack_low_high(q)], axis=1)


def _dq4_0(b: np.ndarray) -> np.ndarray:
    return _fp16_from(b[:, :2]) * (_unpack_low_high(b[:, 2:]).astype(F32) - F32(8))


def _q4_1(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
    d = ((hi - lo) / F32(15)).astype(F32)
    q = np.minimum(np.trunc((x - lo) * _inverse(d) + F32(0.5)), 15).astype(np.uint8)
    return np.concatenate([_fp16_bytes(d), _fp16_bytes(lo), _pack_low_high(q)], axis=1)


def _dq4_1(b: np.ndarray) -> np.ndarray:
    return _fp16_from(b[:, :2]) * _unpack_low_high(b[:, 4:]).astype(F32) + _fp16_from(b[:, 2:4])


def _q5_0(x: np.ndarray) -> np.ndarray:
    d = (_signed_absmax(x) / F32(-16)).astype(F32)
    q = np.minimum(np.trunc(x * _inverse(d) + F32(16.5)), 31).astype(np.uint8)
    return np.concatenate([_fp16_bytes(d), _high_bits(q), _pack_low_high(q)], axis=1)


def _dq5_0(b: np.ndarray) -> np.ndarray:
    q = _unpack_low_high(b[:, 6:]) | (_from_high_bits(b[:, 2:6]) << 4)
    return _fp16_from(b[:, :2]) * (q.astype(F32) - F32(16))


def _q5_1(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
    d = ((hi - lo) / F32(31)).astype(F32)
    q = np.minimum(np.trunc((x - lo) * _inverse(d) + F32(0.5)), 31).astype(np.uint8)
    return np.concatenate([_fp16_bytes(d), _fp16_bytes(lo), _high_bits(q), _pack_low_high(q)], axis=1)


def _dq5_1(b: np.ndarray) -> np.ndarray:
    q = _unpack_low_high(b[:, 8:]) | (_from_high_bits(b[:, 4:8]) << 4)
    return _fp16_from(b[:, :2]) * q.astype(F32) + _fp16_from(b[:, 2:4])


def _q8_0(x: np.ndarray) -> np.ndarray:
    d = (np.abs(x).max(axis=1, keepdims=True) / F32(127)).astype(F32)
    v = x * _inverse(d)
    q = (np.sign(v) * np.floor(np.abs(v) + F32(0.5))).astype(np.int8)  # C roundf: half away from zero
    return np.concatenate([_fp16_bytes(d), q.view(np.uint8)], axis=1)


def _dq8_0(b: np.ndarray) -> np.ndarray:
    return _fp16_from(b[:, :2]) * np.ascontiguousarray(b[:, 2:]).view(np.int8).astype(F32)


# ---------------------------------------------------------------------------------------------
# K-quants
# ---------------------------------------------------------------------------------------------


def _make_qkx2_quants(
    x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ggml's ``make_qkx2_quants`` for many groups at once: the (scale, min) pair minimising the
    weighted squared error of ``x ≈ scale·L − min`` (``L`` in 0..nmax), searching ``nstep + 1``
    candidate scales around ``(max − min)/nmax`` and solving least squares for each.
    x, w: (N, n) -> scale (N,), min (N,) (a positive offset to subtract), L (N, n) uint8."""
    lo = np.minimum(x.min(axis=1), F32(0))
    hi = x.max(axis=1)
    flat = hi == lo
    sum_w, sum_x = _seqsum(w), _seqsum(w * x)
    rng = np.where(flat, F32(1), hi - lo).astype(F32)
    iscale = F32(nmax) / rng
    scale = F32(1) / iscale
    L = np.clip(_nearest_int(iscale[:, None] * (x - lo[:, None])), 0, nmax).astype(F32)
    diff = scale[:, None] * L + lo[:, None] - x
    best = _seqsum(w * (diff * diff))
    with np.errstate(divide="ignore", invalid="ignore"):
        for step in range(nstep + 1):
            # ggml keeps updating ``min`` as better fits are found, and the next candidates use it
            rng = np.where(flat, F32(1), hi - lo).astype(F32)
            isc = (F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / rng
            La = np.clip(_nearest_int(isc[:, None] * (x - lo[:, None])), 0, nmax).astype(F32)
            sum_l, sum_l2, sum_xl = _seqsum(w * La), _seqsum(w * La * La), _seqsum(w * La * x)
            D = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            pos = this_min > 0
            this_min = np.where(pos, F32(0), this_min)
            this_scale = np.where(pos, sum_xl / sum_l2, this_scale)
            diff = this_scale[:, None] * La + this_min[:, None] - x
            cur = _seqsum(w * (diff * diff))
            better = (D > 0) & (cur < best)
            L = np.where(better[:, None], La, L)
            best = np.where(better, cur, best)
            scale = np.where(better, this_scale, scale)
            lo = np.where(better, this_min, lo)
    scale = np.where(flat, F32(0), scale)
    L = np.where(flat[:, None], F32(0), L)
    return scale.astype(F32), (-lo).astype(F32), L.astype(np.uint8)


def _pack_k4_scales(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and eight 6-bit mins -> the 12-byte ``scales`` field of Q4_K. (N, 8) x2 -> (N, 12)."""
    out = np.zeros((ls.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    out[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:] & 0x0F) | ((lm[:, 4:] & 0x0F) << 4)
    return out


def _unpack_k4_scales(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`_pack_k4_scales` (ggml's ``get_scale_min_k4``)."""
    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    mn = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    return sc, mn


def _q4_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    sub = x.reshape(nb * 8, 32)
    av_x = np.sqrt(_seqsum(sub * sub) / F32(32))
    weights = av_x[:, None] + np.abs(sub)
    scales, mins, L = _make_qkx2_quants(sub, weights, 15, -1.0, 0.1, 20)
    scales, mins, L = scales.reshape(nb, 8), mins.reshape(nb, 8), L.reshape(nb, 8, 32)
    max_scale = np.maximum(scales.max(axis=1), F32(0))
    max_min = np.maximum(mins.max(axis=1), F32(0))
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0)).astype(F32)
        inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0)).astype(F32)
    ls = np.minimum(_nearest_int(inv_scale[:, None] * scales) & 0xFF, 63).astype(np.uint8)
    lm = np.minimum(_nearest_int(inv_min[:, None] * mins) & 0xFF, 63).astype(np.uint8)
    d_b, dmin_b = _fp16_bytes(max_scale / F32(63)), _fp16_bytes(max_min / F32(63))
    d = _fp16_from(d_b) * ls.astype(F32)  # (nb, 8)
    dm = _fp16_from(dmin_b) * lm.astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        requant = np.clip(_nearest_int((x.reshape(nb, 8, 32) + dm[..., None]) / d[..., None]), 0, 15)
    L = np.where((d != 0)[..., None], requant, L).astype(np.uint8).reshape(nb, 4, 2, 32)
    qs = (L[:, :, 0] | (L[:, :, 1] << 4)).reshape(nb, 128)
    return np.concatenate([d_b, dmin_b, _pack_k4_scales(ls, lm), qs], axis=1)


def _dq4_k(b: np.ndarray) -> np.ndarray:
    nb = b.shape[0]
    sc, mn = _unpack_k4_scales(b[:, 4:16])
    d = _fp16_from(b[:, 0:2]) * sc.astype(F32)  # (nb, 8)
    m = _fp16_from(b[:, 2:4]) * mn.astype(F32)
    qs = b[:, 16:].reshape(nb, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    q = (qs & 0x0F).reshape(nb, 8, 32).astype(F32)
    return (d[..., None] * q - m[..., None]).reshape(nb, QK_K)


def _make_qx_quants_rmse1(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """ggml's ``make_qx_quants(n, nmax, x, L, rmse_type=1, NULL)`` for many groups: a symmetric scale
    chosen among 19 candidates to minimise the x²-weighted squared error. (N, n) -> scale (N,), L (N, n)."""
    mx = _signed_absmax(x)[:, 0]
    zero = np.abs(mx) < F32(1e-15)
    mx_safe = np.where(zero, F32(1), mx).astype(F32)
    w = x * x

    def trial(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        l_ = np.clip(_nearest_int(iscale[:, None] * x), -nmax, nmax - 1).astype(F32)
        return l_, _seqsum(w * x * l_), _seqsum(w * l_ * l_)

    L, sumlx, suml2 = trial(F32(-nmax) / mx_safe)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0)).astype(F32)
        best = scale * sumlx
        for step in (*range(-9, 0), *range(1, 10)):
            l_, slx, sl2 = trial(-(F32(nmax) + F32(0.1) * F32(step)) / mx_safe)
            better = (sl2 > 0) & (slx * slx > best * sl2)
            L = np.where(better[:, None], l_, L)
            scale = np.where(better, slx / sl2, scale)
            best = np.where(better, scale * slx, best)
    scale = np.where(zero, F32(0), scale).astype(F32)
    L = np.where(zero[:, None], F32(-nmax), L)  # ggml stores L = 0 (i.e. l = -nmax) for all-zero groups
    return scale, (L + nmax).astype(np.int32)


def _q6_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    scales, L = _make_qx_quants_rmse1(x.reshape(nb * 16, 16), 32)
    scales, L = scales.reshape(nb, 16), L.reshape(nb, 16, 16)
    max_scale = _signed_absmax(scales)[:, 0]
    zero = np.abs(max_scale) < F32(1e-15)
    with np.errstate(divide="ignore"):
        iscale = (F32(-128) / np.where(zero, F32(1), max_scale)).astype(F32)
    d_b = _fp16_bytes(F32(1) / iscale)
    sc = np.minimum(_nearest_int(iscale[:, None] * scales), 127).astype(np.int8)
    d = _fp16_from(d_b) * sc.astype(F32)  # (nb, 16)
    with np.errstate(divide="ignore", invalid="ignore"):
        requant = np.clip(_nearest_int(x.reshape(nb, 16, 16) / d[..., None]), -32, 31) + 32
    L = np.where((d != 0)[..., None], requant, L).astype(np.uint8).reshape(nb, 2, 4, 32)  # [half, quarter, l]
    ql = np.concatenate(
        [(L[:, :, 0] & 0x0F) | ((L[:, :, 2] & 0x0F) << 4), (L[:, :, 1] & 0x0F) | ((L[:, :, 3] & 0x0F) << 4)], axis=2
    ).reshape(nb, 128)
    qh = ((L[:, :, 0] >> 4) | ((L[:, :, 1] >> 4) << 2) | ((L[:, :, 2] >> 4) << 4) | ((L[:, :, 3] >> 4) << 6))
    out = np.concatenate([ql, qh.reshape(nb, 64), sc.view(np.uint8), d_b], axis=1)
    out[zero] = 0
    return out


def _dq6_k(b: np.ndarray) -> np.ndarray:
    nb = b.shape[0]
    ql = b[:, :128].reshape(nb, 2, 2, 32)  # [half, which 32 bytes, l]
    qh = b[:, 128:192].reshape(nb, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    low = np.stack([ql[:, :, 0] & 0x0F, ql[:, :, 1] & 0x0F, ql[:, :, 0] >> 4, ql[:, :, 1] >> 4], axis=2)
    q = (low | ((qh & 3) << 4)).astype(F32) - F32(32)  # (nb, 2, 4, 32)
    sc = np.ascontiguousarray(b[:, 192:208]).view(np.int8).astype(F32)  # (nb, 16): one per 16 elements
    d = _fp16_from(b[:, 208:210]) * sc
    return (d.reshape(nb, 16, 1) * q.reshape(nb, 16, 16)).reshape(nb, QK_K)


_QUANTIZE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1, "Q8_0": _q8_0, "Q4_K": _q4_k, "Q6_K": _q6_k,
}
_DEQUANTIZE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Q4_0": _dq4_0, "Q4_1": _dq4_1, "Q5_0": _dq5_0, "Q5_1": _dq5_1, "Q8_0": _dq8_0, "Q4_K": _dq4_k, "Q6_K": _dq6_k,
}


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def _encode(x: np.ndarray, name: str) -> np.ndarray:
    """The bytes of finite float rows ``x`` (..., n) in ggml type ``name``, unchecked (see :func:`quantize`)."""
    _, block, size = TYPES[name]
    if name == "F32":
        return np.ascontiguousarray(x).view(np.uint8)
    if name == "F16":
        return np.ascontiguousarray(x.astype(np.float16)).view(np.uint8)
    if name == "BF16":
        u = np.ascontiguousarray(x).view(np.uint32).astype(np.uint64)
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # round to nearest even (finite input)
        return u.astype(np.uint16).view(np.uint8)
    blocks = _QUANTIZE[name](x.reshape(-1, block))
    return blocks.reshape(*x.shape[:-1], x.shape[-1] // block * size)


def quantize(x: np.ndarray, qtype: str | int) -> np.ndarray:
    """Quantize float rows ``x`` (..., n) into ggml blocks: uint8 array (..., n / block * bytes).

    ``n`` must be a multiple of the block size (32, or 256 for K-quants); NaN/inf are rejected, and so are values the
    format cannot hold: every block type stores its scale as fp16 (largest value 65504), F16 stores the values
    themselves, so values beyond those ranges would be written as inf. The check decodes what was written.
    F32, F16 and BF16 are stored as their raw bytes.
    """
    name = type_name(qtype)
    x = np.asarray(x, dtype=F32)
    if x.ndim == 0:
        raise ValueError("quantize needs at least a 1-D array")
    if not np.isfinite(x).all():
        raise ValueError("input contains NaN or inf; ggml quantization needs finite values")
    if x.shape[-1] % TYPES[name][1]:
        raise ValueError(f"row length {x.shape[-1]} is not a multiple of the {name} block size {TYPES[name][1]}")
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported just below
        out = _encode(x, name)
        overflow = name != "F32" and not np.isfinite(dequantize(out, name)).all()
    if overflow:
        what = {"F16": "F16's largest value (65504)", "BF16": "BF16's largest value (about 3.39e38)"}.get(
            name, f"{name}'s fp16 block scales (a scale above 65504)")
        raise ValueError(f"values up to {float(np.abs(x).max()):.4g} overflow {what}: rescale the tensor first")
    return out


def dequantize(data: np.ndarray, qtype: str | int) -> np.ndarray:
    """Decode ggml bytes (..., n_bytes) back to float32 (..., n)."""
    name = type_name(qtype)
    data = np.ascontiguousarray(np.asarray(data)).view(np.uint8)
    _, block, size = TYPES[name]
    if data.shape[-1] % size:
        raise ValueError(f"{data.shape[-1]} bytes per row is not a multiple of the {name} block size {size} bytes")
    if name == "F32":
        out = data.view(F32)
    elif name == "F16":
        out = data.view(np.float16).astype(F32)
    elif name == "BF16":
        out = (data.view(np.uint16).astype(np.uint32) << 16).view(F32)
    else:
        out = _DEQUANTIZE[name](data.reshape(-1, size))
    return out.reshape(*data.shape[:-1], data.shape[-1] // size * block)


def read_tensor(path_or_reader: str | Path, name: str) -> np.ndarray:
    """One tensor of a GGUF file as float32, in PyTorch layout (``[out, in]`` for a weight).

    Accepts a path or an already opened ``gguf.GGUFReader`` (opening one reads the whole header,
    a few seconds for SmolLM2, so reuse it when reading several tensors).
    """
    from gguf import GGUFReader

    from lmkit.loaders.gguf_file import GGUFError, open_gguf, path_of, tensor_info

    reader = path_or_reader if isinstance(path_or_reader, GGUFReader) else open_gguf(path_or_reader)
    t = tensor_info(reader, name)  # a missing tensor is named, with the file
    qtype = type_name(int(t.tensor_type))
    shape = tuple(int(s) for s in reversed(t.shape))  # GGUF stores ggml's (in, out) order
    out = dequantize(np.asarray(t.data).reshape(shape[:-1] + (-1,)), qtype).reshape(shape)
    if not np.isfinite(out).all():
        raise GGUFError(f"GGUF file {path_of(reader)}: tensor {name!r} holds non-finite values after dequantization")
    return out if out.flags.writeable else out.copy()  # F32 data would be a read-only view of the file


def quantize_ggml(w: torch.Tensor, qtype: str = "Q4_0") -> QuantizedTensor:
    """A weight ``(out, in)`` as ggml blocks inside a :class:`QuantizedTensor` (runs via ``QuantLinear``)."""
    check_finite(w, "weight")
    name = type_name(qtype)
    blocks = quantize(w.detach().float().cpu().numpy(), name)  # checks that the format can hold the values
    return QuantizedTensor("ggml", tuple(w.shape), {"blocks": torch.from_numpy(blocks)}, {"type": name})


def dequantize_ggml(q: QuantizedTensor) -> torch.Tensor:
    return torch.from_numpy(dequantize(q.tensors["blocks"].cpu().numpy(), q.meta["type"])).reshape(q.shape)


register("ggml", dequantize_ggml)
