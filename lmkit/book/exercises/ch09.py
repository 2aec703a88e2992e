"""Exercises of chapter 09 (llama.cpp formats). Expected answers come from :mod:`lmkit.quant.ggml` and the
book's SmolLM2 GGUF file at call time."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lmkit.book.exercises.framework import Verdict, check_function, check_number, check_tensor, not_answered
from lmkit.book.exercises.framework import smollm2_reader as _reader
from lmkit.quant import ggml

FFN_DOWN = "blk.10.ffn_down.weight"


def _shape(name: str) -> tuple[int, int]:
    t = next(t for t in _reader().tensors if t.name == name)
    cols, rows = (int(n) for n in t.shape[:2])  # GGUF lists the row length first
    return rows, cols


# 9.1 ------------------------------------------------------------------------------------------------
def check_q4_0_bytes(answer: int | None) -> Verdict:
    """Bytes of ``blk.10.ffn_down.weight`` stored as Q4_0."""
    rows, cols = _shape(FFN_DOWN)
    _, per_block, block_bytes = ggml.TYPES["Q4_0"]
    return check_number(answer, rows * cols // per_block * block_bytes, "bytes of the matrix in Q4_0")


def solution_q4_0_bytes() -> int:
    rows, cols = 576, 1536  # (out, in) of blk.10.ffn_down.weight
    blocks = rows * cols // 32  # Q4_0 blocks hold 32 weights ...
    return blocks * (2 + 32 // 2)  # ... in an fp16 scale and 16 bytes of nibbles


# 9.2 ------------------------------------------------------------------------------------------------
def check_q4_k_bits(answer: float | None) -> Verdict:
    """Bits per weight of Q4_K, counted from its super-block layout."""
    return check_number(answer, ggml.bits_per_weight("Q4_K"), "bits per weight of Q4_K")


def solution_q4_k_bits() -> float:
    super_block = 256
    nbytes = 2 + 2 + 12 + super_block // 2  # d, dmin, 8 six-bit (scale, min) pairs, 4-bit codes
    return 8 * nbytes / super_block


# 9.3 ------------------------------------------------------------------------------------------------
def q8_0_block() -> np.ndarray:
    """The first 34-byte block of SmolLM2's ``token_embd.weight`` (stored as Q8_0), as uint8."""
    t = next(t for t in _reader().tensors if t.name == "token_embd.weight")
    return np.asarray(t.data).reshape(-1)[: ggml.TYPES["Q8_0"][2]].view(np.uint8).copy()


def check_q8_0_values(answer: np.ndarray | None) -> Verdict:
    """The 32 weights the block of :func:`q8_0_block` stands for."""
    expected = ggml.dequantize(q8_0_block()[None], "Q8_0")[0]
    import torch

    return check_tensor(None if answer is None else np.asarray(answer, dtype=np.float32),
                        torch.from_numpy(expected), "the 32 decoded weights", atol=0, rtol=1e-6)


def solution_q8_0_values() -> np.ndarray:
    block = q8_0_block()
    d = block[:2].view(np.float16)[0].astype(np.float32)  # the fp16 scale
    q = block[2:].view(np.int8).astype(np.float32)  # 32 signed codes
    return d * q


# 9.4 ------------------------------------------------------------------------------------------------
def check_dequantize_q4_0(answer: Callable[[np.ndarray], np.ndarray] | None) -> Verdict:
    """A function mapping one 18-byte Q4_0 block (uint8) to its 32 float32 weights."""
    rng = np.random.default_rng(0)
    cases = []
    for scale in (0.01, 1.0, 30.0):
        x = (rng.standard_normal((1, 32)) * scale).astype(np.float32)
        block = ggml.quantize(x, "Q4_0").reshape(-1)
        cases.append(((block.copy(),), ggml.dequantize(block[None], "Q4_0")[0]))
    return check_function(answer, cases, "your Q4_0 decoder", lambda got, exp: np.shape(got) == exp.shape
                          and np.array_equal(np.asarray(got, np.float32), exp))


def solution_dequantize_q4_0(block: np.ndarray) -> np.ndarray:
    d = block[:2].view(np.float16)[0].astype(np.float32)
    nibbles = block[2:18]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4]).astype(np.float32)  # element j low, j + 16 high
    return d * (q - 8)


# 9.5 ------------------------------------------------------------------------------------------------
def check_k_quant_tensors(answer: int | None) -> Verdict:
    """How many of SmolLM2's 2-D tensors have rows whose length is a multiple of 256 (so Q4_K/Q6_K can store them)."""
    n = sum(1 for t in _reader().tensors if len(t.shape) == 2 and int(t.shape[0]) % ggml.QK_K == 0)
    return check_number(answer, n, "number of tensors a K-quant can store")


def solution_k_quant_tensors() -> int:
    return sum(1 for t in _reader().tensors if len(t.shape) == 2 and int(t.shape[0]) % 256 == 0)


# 9.6 ------------------------------------------------------------------------------------------------
def _minilm_ffn() -> np.ndarray:
    from lmkit.loaders.minilm import load_minilm

    return load_minilm().blocks[0].ffn.up_proj.weight.detach().numpy().astype(np.float32)


def check_best_4bit_format(answer: str | None) -> Verdict:
    """The 4-bit 32-element format (Q4_0 or Q4_1) with the lower RMSE on MiniLM's never-quantized layer-0 FFN."""
    if answer is None:
        return not_answered('"Q4_0" or "Q4_1"')
    w = _minilm_ffn()
    rmse = {n: float(np.sqrt(((ggml.dequantize(ggml.quantize(w, n), n) - w) ** 2).mean())) for n in ("Q4_0", "Q4_1")}
    best = min(rmse, key=rmse.get)
    if answer == best:
        return Verdict(True, f"{best} (RMSE {rmse[best]:.5f} against {max(rmse.values()):.5f})")
    return Verdict(False, f"{answer!r} is not the lower-error format on this matrix: measure both RMSEs")


def solution_best_4bit_format() -> str:
    w = _minilm_ffn()
    rmse = {n: np.sqrt(((ggml.dequantize(ggml.quantize(w, n), n) - w) ** 2).mean()) for n in ("Q4_0", "Q4_1")}
    return min(rmse, key=rmse.get)
