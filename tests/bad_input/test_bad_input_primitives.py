"""Bad input checked where the data enters: the public primitives under the wrappers (an empty tensor reaching a
reduction, a mask given as a list, a scale that is NaN, a file in the wrong encoding, values a format cannot hold)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmkit.decoding import beam_search, generate
from lmkit.efficient.flash import flash_attention
from lmkit.quant import ggml
from lmkit.quant.absmax import quantize_absmax, quantize_int, quantize_zeropoint
from lmkit.quant.int8_matmul import quantize_rowwise
from lmkit.quant.rtn import rtn_groupwise
from lmkit.tokenizers.wordpiece import WordPiece
from lmkit.transformer.model import Transformer, TransformerConfig

EMPTY = "is empty .*there are no values to take a scale from"


@pytest.mark.parametrize("shape", [(4, 0), (0, 32), (0,)])
@pytest.mark.parametrize(
    "quantize",
    [
        lambda w: quantize_int(w, 8),
        lambda w: quantize_int(w, 4, symmetric=False),
        lambda w: quantize_absmax(w, 8),
        lambda w: quantize_zeropoint(w, 8),
    ],
    ids=["int8", "int4 zero-point", "absmax", "zeropoint"],
)
def test_empty_weight_is_named_before_a_reduction(quantize, shape):
    with pytest.raises(ValueError, match=rf"weight {EMPTY}"):
        quantize(torch.zeros(shape))


@pytest.mark.parametrize("shape", [(4, 0), (0, 64)])
def test_rtn_of_an_empty_matrix_is_named(shape):
    with pytest.raises(ValueError, match=rf"weight {EMPTY}"):
        rtn_groupwise(torch.zeros(shape), 4, 32)


def test_int8_rows_of_length_zero_are_named():
    with pytest.raises(ValueError, match=r"x has rows of length 0 \(shape \(3, 0\)\)"):
        quantize_rowwise(torch.zeros(3, 0))
    codes, scale = quantize_rowwise(torch.zeros(0, 8))  # no rows: nothing to scale, a correct empty result
    assert codes.shape == (0, 8) and scale.shape == (0, 1)


# ------------------------------------------------------------------------------------------------ flash attention

def _qkv(d: int = 8) -> tuple[torch.Tensor, ...]:
    return torch.randn(3, 1, 2, 5, d, generator=torch.Generator().manual_seed(0)).unbind(0)


def test_head_dim_zero_is_named():
    with pytest.raises(ValueError, match=r"the head dim must be at least 1, got q of shape \(1, 2, 5, 0\)"):
        flash_attention(*_qkv(0))


@pytest.mark.parametrize("mask", [[[True] * 5] * 5, np.ones((5, 5), bool), ((True,),)], ids=["list", "numpy", "tuple"])
def test_mask_that_is_not_a_tensor_is_named(mask):
    with pytest.raises(TypeError, match="attn_mask must be a tensor .* got (list|ndarray|tuple)"):
        flash_attention(*_qkv(), attn_mask=mask)


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -float("inf"), "0.1", True])
def test_scale_that_is_not_a_finite_number_is_named(scale):
    with pytest.raises(ValueError, match=r"scale must be a finite number, got"):
        flash_attention(*_qkv(), scale=scale)


def test_a_finite_scale_matches_sdpa():
    q, k, v = _qkv()
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.25)
    torch.testing.assert_close(flash_attention(q, k, v, scale=0.25), ref, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------- decoding

@pytest.fixture(scope="module")
def tiny_lm() -> Transformer:
    torch.manual_seed(0)
    return Transformer(TransformerConfig.preset("llama", vocab_size=16, d_model=16, n_layers=1, n_heads=2,
                                                n_kv_heads=1, head_dim=8, d_ff=32, max_positions=32)).eval()


@pytest.mark.parametrize("search", [generate, beam_search])
@pytest.mark.parametrize("mask", [[[1, 1, 1]], ((True, True, True),), np.ones((1, 3))], ids=["list", "tuple", "numpy"])
def test_attention_mask_that_is_not_a_tensor_is_named(tiny_lm, search, mask):
    with pytest.raises(TypeError, match=r"attention_mask must be a \(batch, length\) tensor .* got"):
        search(tiny_lm, torch.tensor([[1, 2, 3]]), 2, attention_mask=mask)


@pytest.mark.parametrize("eos", [torch.tensor(5), torch.tensor([5]), torch.tensor([5, 7], dtype=torch.int32)],
                         ids=["0-d", "1-d", "int32"])
def test_eos_as_a_tensor_is_taken_like_an_int_or_a_list(tiny_lm, eos):
    prompt = torch.tensor([[1, 2, 3]])
    as_list = eos.reshape(-1).tolist()
    want = generate(tiny_lm, prompt, 6, eos_token_id=as_list, pad_token_id=0)
    assert torch.equal(generate(tiny_lm, prompt, 6, eos_token_id=eos, pad_token_id=0), want)


@pytest.mark.parametrize(("eos", "error", "message"), [
    (torch.tensor(2.0), TypeError, "eos_token_id must be an integer torch.Tensor"),
    (torch.tensor(16), ValueError, r"eos_token_id must hold ids in \[0, 16\)"),
    (torch.tensor([-1]), ValueError, "eos_token_id must be a non-negative int, got -1"),
])
def test_bad_eos_tensor_is_named(tiny_lm, eos, error, message):
    with pytest.raises(error, match=message):
        generate(tiny_lm, torch.tensor([[1, 2]]), 3, eos_token_id=eos)


@pytest.mark.parametrize("search", [generate, beam_search])
@pytest.mark.parametrize(("pad", "message"), [(16, r"pad_token_id must hold ids in \[0, 16\)"),
                                              (-3, "pad_token_id must be a non-negative int, got -3")])
def test_pad_outside_the_vocabulary_with_an_early_eos_is_named(tiny_lm, search, pad, message):
    """The pad id fills finished rows only once a row stops early: checked before decoding, not at that step."""
    with pytest.raises(ValueError, match=message):
        search(tiny_lm, torch.tensor([[1, 2], [3, 4]]), 4, eos_token_id=list(range(16)), pad_token_id=pad)


# ------------------------------------------------------------------------------------------------------ tokenizers

def test_wordpiece_vocab_in_latin1_names_the_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes("[PAD]\n[UNK]\ncafé\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{path} is not UTF-8 text \(byte 15 is b'\\xe9'\).*re-encode it"):
        WordPiece.from_vocab_file(path)


# ------------------------------------------------------------------------------------------------------------ ggml

@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q6_K"])
def test_ggml_block_types_refuse_values_their_fp16_scales_cannot_hold(qtype):
    x = np.linspace(-1, 1, 256, dtype=np.float32)[None] * 1e9
    with pytest.raises(ValueError, match=rf"values up to 1e\+09 overflow {qtype}'s fp16 block scales"):
        ggml.quantize(x, qtype)
    blocks = ggml.quantize(x / 1e9 * 1e3, qtype)  # within range: written and read back finite
    assert np.isfinite(ggml.dequantize(blocks, qtype)).all()


def test_ggml_f16_refuses_values_past_65504_and_bf16_takes_them():
    x = np.full((1, 32), 70_000.0, np.float32)
    with pytest.raises(ValueError, match=r"overflow F16's largest value \(65504\)"):
        ggml.quantize(x, "F16")
    assert np.allclose(ggml.dequantize(ggml.quantize(x, "BF16"), "BF16"), x, rtol=1e-2)
    assert np.array_equal(ggml.dequantize(ggml.quantize(x, "F32"), "F32"), x)
