"""llama.cpp block formats: byte-exact against gguf-py's numpy quants and ggml's own C quantizer."""

import ctypes
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


@pytest.fixture(scope="module")
def ggml_quantize_chunk():
    llama_cpp = pytest.importorskip("llama_cpp")
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


@pytest.mark.parametrize("name", ALL)
def test_quantize_bytes_equal_ggml_c(name, ggml_quantize_chunk):
    # llama.cpp's reference quantizer (no importance matrix) is the only oracle for Q4_K / Q6_K quantization
    for seed in (0, 1):
        x = _data(seed=seed)
        assert np.array_equal(ggml.quantize(x, name), ggml_quantize_chunk(x, name))


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
