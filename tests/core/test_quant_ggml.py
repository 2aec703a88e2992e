"""llama.cpp block formats: byte-exact against gguf-py's numpy quants and ggml's own C quantizer.

gguf-py cannot quantize the K-quants, so for Q4_K / Q6_K quantization the oracle is llama.cpp itself: its bytes for
a fixed input are stored in ``tests/core/data/ggml_kquants_llama_cpp.npz`` (written by llama.cpp's
``ggml_quantize_chunk``: ``python tests/core/test_quant_ggml.py``, needs llama-cpp-python), so the byte check runs
without llama.cpp installed, and with it installed a test checks the stored bytes are still llama.cpp's. The
format's own identities (the block layout re-derived here from ggml's C structs, the scale ranges, each code the
nearest one for its block's scales) are checked on any input.
"""

import ctypes
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, quants

from lmkit.quant import ggml
from lmkit.quant.base import QuantLinear

SMALL = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
ALL = SMALL + ["Q4_K", "Q6_K"]
# RMS round-trip error on N(0, 1) data, a bit above what llama.cpp's formats reach (~bits-dependent)
RMSE = {"Q4_0": 0.1, "Q4_1": 0.09, "Q5_0": 0.05, "Q5_1": 0.045, "Q8_0": 0.0065, "Q4_K": 0.08, "Q6_K": 0.021}


def _data(rows=48, cols=512, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, cols)) * rng.uniform(1e-3, 3, (rows, 1))).astype(np.float32)
    x[0, :256] = 0.0  # an all-zero (super-)block
    x[1, :32] = 0.25  # a constant block
    x[2, 32:64] = -x[2, 32:64].max()  # ties for the absmax, negative
    x[3, :256] = np.abs(x[3, :256])  # an all-positive super-block (min clamps to 0 in Q4_K)
    x[4] = rng.standard_t(2, cols)  # heavy tails
    return x


@pytest.mark.parametrize("name", SMALL)
def test_quantize_bytes_equal_gguf_py(name):
    x = _data()
    assert np.array_equal(ggml.quantize(x, name), quants.quantize(x, GGMLQuantizationType[name]))


def _random_blocks(name, n_blocks=64, seed=0):
    """Random bytes in the block layout, with finite fp16 scale fields: exercises every bit of the decoder."""
    rng = np.random.default_rng(seed)
    _, _, size = ggml.TYPES[name]
    b = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    halves = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q4_K": [0, 2], "Q6_K": [208]}
    for off in halves[name]:
        b[:, off : off + 2] = rng.uniform(-1, 1, (n_blocks, 1)).astype(np.float16).view(np.uint8)
    return b


@pytest.mark.parametrize("name", ALL)
def test_dequantize_equals_gguf_py(name):
    for b in (_random_blocks(name), ggml.quantize(_data(), name).reshape(-1, ggml.TYPES[name][2])):
        assert np.array_equal(ggml.dequantize(b, name), quants.dequantize(b, GGMLQuantizationType[name]))


@pytest.mark.parametrize("name", ALL)
def test_round_trip_error(name):
    x = np.random.default_rng(1).standard_normal((64, 1024)).astype(np.float32)
    y = ggml.dequantize(ggml.quantize(x, name), name)
    assert y.shape == x.shape
    assert np.sqrt(((y - x) ** 2).mean()) < RMSE[name]
    if name in ("Q4_1", "Q5_1", "Q8_0"):  # round to nearest: at most half a step (+ fp16 rounding of d and m)
        blocks = x.reshape(-1, 32)
        span = (blocks.max(1) - blocks.min(1)) / {"Q4_1": 15, "Q5_1": 31, "Q8_0": 254 / 2}[name]
        err = np.abs(y - x).reshape(-1, 32).max(1)
        assert (err <= 0.5 * span * 1.01 + np.abs(blocks).max(1) * 2**-10).all()


def llama_cpp_quantizer():
    """``run(x, name)``: ggml's C quantizer ``ggml_quantize_chunk`` (llama-cpp-python's libggml-base, no
    importance matrix) on a float32 ``(rows, n)`` array; ``None`` when llama-cpp-python is not installed."""
    try:
        import llama_cpp
    except ImportError:
        return None
    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    fn = lib.ggml_quantize_chunk
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                   ctypes.c_void_p]

    def run(x, name):
        type_id, block, size = ggml.TYPES[name]
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros((x.shape[0], x.shape[1] // block * size), dtype=np.uint8)
        fn(type_id, x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1], None)
        return out

    return run


@pytest.fixture(scope="module")
def ggml_quantize_chunk():
    run = llama_cpp_quantizer()
    if run is None:
        pytest.skip("llama-cpp-python is not installed")
    return run


@pytest.mark.parametrize("name", ALL)
def test_quantize_bytes_equal_ggml_c(name, ggml_quantize_chunk):
    # llama.cpp's reference quantizer (no importance matrix) is the only oracle for Q4_K / Q6_K quantization
    for seed in (0, 1):
        x = _data(seed=seed)
        assert np.array_equal(ggml.quantize(x, name), ggml_quantize_chunk(x, name))


# ------------------------------------------------------------------------------- K-quants without llama.cpp

K_QUANTS = ["Q4_K", "Q6_K"]
FIXTURE = Path(__file__).parent / "data" / "ggml_kquants_llama_cpp.npz"


def write_fixture(path: Path = FIXTURE) -> None:
    """Store llama.cpp's own Q4_K / Q6_K bytes for a fixed input (the edge cases of ``_data`` + random rows)."""
    run = llama_cpp_quantizer()
    if run is None:
        raise SystemExit("llama-cpp-python is needed to write the fixture: the bytes must come from llama.cpp")
    import llama_cpp

    x = _data(rows=12, cols=512, seed=3)
    path.parent.mkdir(exist_ok=True)
    np.savez_compressed(path, x=x, llama_cpp_version=llama_cpp.__version__, **{n: run(x, n) for n in K_QUANTS})


@pytest.fixture(scope="module")
def llama_cpp_bytes():
    return dict(np.load(FIXTURE))


@pytest.mark.parametrize("name", K_QUANTS)
def test_k_quant_bytes_equal_stored_llama_cpp_output(name, llama_cpp_bytes):
    assert np.array_equal(ggml.quantize(llama_cpp_bytes["x"], name), llama_cpp_bytes[name])


@pytest.mark.parametrize("name", K_QUANTS)
def test_stored_k_quant_bytes_are_llama_cpp_s_own(name, llama_cpp_bytes, ggml_quantize_chunk):
    assert np.array_equal(ggml_quantize_chunk(llama_cpp_bytes["x"], name), llama_cpp_bytes[name])


def _half(b: np.ndarray) -> float:
    return float(np.frombuffer(b.tobytes(), np.float16)[0])


def parse_q4_k(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """One ``block_q4_K`` (ggml-common.h): ``half d; half dmin; uint8 scales[12]; uint8 qs[128]``.
    Returns per element (256,) the 4-bit code q, the sub-block scale d·sc and min dmin·m (x = d·sc·q − dmin·m),
    and the eight 6-bit scale codes sc."""
    d, dmin, sc_bytes, qs = _half(block[0:2]), _half(block[2:4]), block[4:16].astype(int), block[16:144]
    q, scale, low, codes = np.zeros(256, int), np.zeros(256), np.zeros(256), []
    for j in range(8):  # ggml's get_scale_min_k4: 6-bit scale and min of sub-block j
        if j < 4:
            sc, m = sc_bytes[j] & 63, sc_bytes[j + 4] & 63
        else:
            sc = (sc_bytes[j + 4] & 0xF) | ((sc_bytes[j - 4] >> 6) << 4)
            m = (sc_bytes[j + 4] >> 4) | ((sc_bytes[j] >> 6) << 4)
        byte = qs[32 * (j // 2): 32 * (j // 2) + 32]  # sub-blocks 2i and 2i+1 share 32 bytes: low, high nibble
        q[32 * j: 32 * j + 32] = byte & 0xF if j % 2 == 0 else byte >> 4
        scale[32 * j: 32 * j + 32], low[32 * j: 32 * j + 32] = d * sc, dmin * m
        codes.append(int(sc))
    return q, scale, low, codes


def parse_q6_k(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """One ``block_q6_K``: ``uint8 ql[128]; uint8 qh[64]; int8 scales[16]; half d``; 6-bit codes stored plus 32.
    Returns per element (256,) q in -32..31, the sub-block scale d·sc and 0 (x = d·sc·q), and the 16 int8 sc."""
    ql, qh, sc, d = block[0:128].astype(int), block[128:192].astype(int), block[192:208].view(np.int8), \
        _half(block[208:210])
    q, scale = np.zeros(256, int), np.zeros(256)
    for half in range(2):  # ggml's dequantize_row_q6_K: 128 elements from 64 ql bytes, 32 qh bytes, 8 scales
        lo, hi, s = ql[64 * half:], qh[32 * half:], sc[8 * half:]
        for i in range(32):
            y = 128 * half + i
            q[y] = (lo[i] & 0xF) | ((hi[i] >> 0 & 3) << 4)
            q[y + 32] = (lo[i + 32] & 0xF) | ((hi[i] >> 2 & 3) << 4)
            q[y + 64] = (lo[i] >> 4) | ((hi[i] >> 4 & 3) << 4)
            q[y + 96] = (lo[i + 32] >> 4) | ((hi[i] >> 6 & 3) << 4)
            for k in range(4):
                scale[y + 32 * k] = d * s[i // 16 + 2 * k]
    return q - 32, scale, np.zeros(256), sc.tolist()


K_LAYOUT = {  # type -> (parser, the codes q can take, the scale code of the largest sub-block scale)
    "Q4_K": (parse_q4_k, range(0, 16), lambda codes: max(codes) == 63),
    "Q6_K": (parse_q6_k, range(-32, 32), lambda codes: min(codes) == -128),
}


@pytest.mark.parametrize("name", K_QUANTS)
def test_k_quant_bytes_satisfy_the_format(name):
    """lmkit's K-quant bytes, read with the layout written out above: gguf-py decodes them to d·sc·q − dmin·m; the
    sub-block scales use their full range (ggml sets d = max scale / 63 in Q4_K, d = −max |scale| / 128 in Q6_K,
    so some scale code is 63, resp. −128); and every code is the nearest one for its sub-block's scale and min."""
    parse, codes, full_range = K_LAYOUT[name]
    x = _data(rows=16)
    blocks = ggml.quantize(x, name).reshape(-1, ggml.TYPES[name][2])
    decoded = quants.dequantize(blocks, GGMLQuantizationType[name]).reshape(-1, 256)
    for block, values, xs in zip(blocks, decoded, x.reshape(-1, 256), strict=True):
        q, scale, low, scale_codes = parse(block)
        np.testing.assert_allclose(values, scale * q - low, rtol=1e-6, atol=1e-30)
        if not xs.any():
            continue
        assert full_range(scale_codes)
        grid = np.array(codes)
        err = np.abs(scale[:, None] * grid[None, :] - low[:, None] - xs[:, None])  # every code's error (256, n)
        live = scale != 0
        chosen = err[np.arange(256), q - grid[0]]
        assert (chosen[live] <= err[live].min(axis=1) * (1 + 1e-6) + 1e-7 * np.abs(scale[live])).all()


def test_errors():
    with pytest.raises(ValueError, match="unknown"):
        ggml.type_name("Q3_K")
    with pytest.raises(ValueError, match="unknown"):
        ggml.dequantize(np.zeros((1, 110), np.uint8), 11)  # Q3_K's id: not supported here
    with pytest.raises(ValueError, match="multiple"):
        ggml.quantize(np.zeros((2, 48), np.float32), "Q4_0")
    with pytest.raises(ValueError, match="multiple"):
        ggml.quantize(np.zeros((2, 576), np.float32), "Q4_K")  # SmolLM2's width is not a multiple of 256
    with pytest.raises(ValueError, match="NaN or inf"):
        ggml.quantize(np.array([np.nan] * 32, np.float32), "Q8_0")
    with pytest.raises(ValueError, match="multiple"):
        ggml.dequantize(np.zeros(19, np.uint8), "Q4_0")


def test_quant_linear_from_ggml_blocks():
    w = torch.randn(64, 256)
    lin = QuantLinear(ggml.quantize_ggml(w, "Q6_K"))
    assert lin.weight_nbytes() == 64 * 210
    x = torch.randn(3, 256)
    w_hat = torch.from_numpy(ggml.dequantize(ggml.quantize(w.numpy(), "Q6_K"), "Q6_K"))
    torch.testing.assert_close(lin(x), x @ w_hat.t())


@pytest.mark.slow
def test_reads_every_tensor_of_the_smollm2_gguf(smollm2_path):
    reader = GGUFReader(smollm2_path)
    seen = set()
    for t in reader.tensors:
        name = GGMLQuantizationType(int(t.tensor_type)).name
        if name in seen:  # one tensor of each type is enough (all 272 take ~10 s)
            continue
        seen.add(name)
        ours = ggml.read_tensor(reader, t.name)
        ref = quants.dequantize(t.data, t.tensor_type)
        assert ours.shape == tuple(int(s) for s in reversed(t.shape))
        assert np.array_equal(ours.reshape(ref.shape), ref)
        if name in SMALL:  # re-quantizing the decoded weights gives back the very same bytes
            assert np.array_equal(ggml.quantize(ours, name).reshape(t.data.shape), t.data)
    assert {"F32", "Q4_1", "Q8_0"} <= seen


if __name__ == "__main__":  # python tests/core/test_quant_ggml.py: (re)write the llama.cpp fixture
    sys.exit(write_fixture())
