"""Real weights through lmkit's hand-written transformer, checked against implementations nobody here wrote:
HF transformers (tiny random GPT-2/BERT, LlamaForCausalLM with SmolLM2's weights), sentence-transformers, llama.cpp."""

from __future__ import annotations

import pytest
import torch

from lmkit.loaders.hf import from_hf_bert, from_hf_gpt2, to_hf_llama
from lmkit.loaders.minilm import embed
from lmkit.loaders.smollm2 import chat_prompt
from lmkit.training.evaluation import evaluation_tokens, perplexity
from lmkit.transformer.kv_cache import KVCache

SENTENCES = [
    "The cat sits on the mat.",
    "A man is playing a guitar on stage!",
    "Transformers replace recurrence with attention; RNNs process tokens one by one.",
    "Paris is the capital and most populous city of France.",
    "How do I install PyTorch on Windows?",
    "Quantization stores weights in 4 bits to save memory.",
    "short",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
]


def test_tiny_gpt2_matches_transformers():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=101, n_positions=32, n_embd=48, n_layer=3, n_head=4)).eval()
    ours = from_hf_gpt2(hf)
    ids = torch.randint(0, 101, (2, 17))
    mask = torch.ones(2, 17, dtype=torch.bool)
    mask[1, :5] = False  # left padding in the second row
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, rtol=1e-5, atol=1e-5)
        a, b = ours(ids, attention_mask=mask).logits, hf(ids, attention_mask=mask.long(),
                                                         position_ids=(mask.long().cumsum(-1) - 1).clamp_min(0)).logits
        torch.testing.assert_close(a[1, 5:], b[1, 5:], rtol=1e-5, atol=1e-5)  # padding rows may differ


def test_load_state_fills_a_model_strictly_and_ties_the_head():
    """The loading every loader shares: a tied head may be left out, a built model keeps its dtype, a ``meta`` model
    takes the tensors themselves (then its tie and RoPE frequencies are back); a missing tensor is named."""
    from lmkit.loaders.state_dict import load_state
    from lmkit.transformer.model import Transformer, TransformerConfig

    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=40, d_model=16, n_layers=1, n_heads=2, d_ff=32, tie_embeddings=True)
    ref = Transformer(cfg).eval()
    state = {k: v.double() for k, v in ref.state_dict().items() if k != "lm_head.weight"}  # tied: left out
    built = load_state(Transformer(cfg).train(), state)
    with torch.device("meta"):
        meta = Transformer(cfg)
    meta = load_state(meta, {k: v.float() for k, v in state.items()})
    ids = torch.randint(0, 40, (2, 7))
    for model in (built, meta):
        assert not model.training and model.lm_head.weight is model.tok_emb.weight
        assert model.tok_emb.weight.dtype == torch.float32
        with torch.no_grad():
            torch.testing.assert_close(model(ids).logits, ref(ids).logits)
    del state["blocks.0.ffn.up_proj.weight"]
    with pytest.raises(ValueError, match=r"^file\.bin: no tensor for \['up'\] \(1 in all\): the config needs them$"):
        load_state(Transformer(cfg), state, source={"blocks.0.ffn.up_proj.weight": "up"}, origin="file.bin: ")


def test_tiny_bert_matches_transformers():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=99, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                     max_position_embeddings=40)
    hf = BertModel(cfg).eval()
    ours = from_hf_bert(hf)
    ids = torch.randint(0, 99, (2, 13))
    types = torch.randint(0, 2, (2, 13))
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[0, 9:] = False  # right padding
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, token_type_ids=types).hidden_states
        b = hf(ids, attention_mask=mask.long(), token_type_ids=types).last_hidden_state
    torch.testing.assert_close(a[mask], b[mask], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_minilm_matches_sentence_transformers(minilm_model, minilm_tokenizer, minilm_path):
    from sentence_transformers import SentenceTransformer

    ours = embed(minilm_model, minilm_tokenizer, SENTENCES)
    st = SentenceTransformer(str(minilm_path), device="cpu")
    ref = torch.as_tensor(st.encode(SENTENCES, convert_to_numpy=True))
    cos = torch.nn.functional.cosine_similarity(ours, ref)
    print(f"MiniLM vs sentence-transformers: min cosine {cos.min():.8f}, max abs diff {(ours - ref).abs().max():.2e}")
    assert cos.min() >= 0.99999
    assert (ours - ref).abs().max() < 1e-5


@pytest.fixture(scope="module")
def hf_llama(smollm2_model):
    return to_hf_llama(smollm2_model)


@pytest.fixture(scope="module")
def france_ids(smollm2_tokenizer):
    return torch.tensor([smollm2_tokenizer.encode(chat_prompt("What is the capital of France?"))])


def _greedy(model, ids: torch.Tensor, n: int, eos: int) -> list[int]:
    cache, out = KVCache(), []
    with torch.no_grad():
        logits = model(ids, cache=cache).logits
        for _ in range(n):
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            if nxt == eos:
                break
            logits = model(torch.tensor([[nxt]]), cache=cache).logits
    return out


@pytest.mark.slow
def test_smollm2_answers_paris(smollm2_model, smollm2_tokenizer, france_ids):
    out = _greedy(smollm2_model, france_ids, 12, smollm2_tokenizer.eos_id)
    assert smollm2_tokenizer.decode(out) == "The capital of France is Paris.<|im_end|>"


@pytest.mark.slow
def test_smollm2_matches_hf_llama(smollm2_model, hf_llama, france_ids):
    with torch.no_grad():
        ours, ref = smollm2_model(france_ids).logits, hf_llama(france_ids).logits
    diff = (ours - ref).abs().max().item()
    print(f"SmolLM2 lmkit vs HF LlamaForCausalLM: max abs logit diff {diff:.2e} (logit range ±{ref.abs().max():.1f})")
    assert diff < 1e-3  # float32 rounding only (measured ~7e-5)
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))


@pytest.mark.slow
def test_kv_cache_and_left_padding_match_full_forward(smollm2_model, france_ids):
    ids = france_ids[:, :12]
    with torch.no_grad():
        full = smollm2_model(ids).logits
        cache = KVCache()
        first = smollm2_model(ids[:, :8], cache=cache).logits
        rest = [smollm2_model(ids[:, t : t + 1], cache=cache).logits for t in range(8, 12)]
        torch.testing.assert_close(torch.cat([first, *rest], 1), full, rtol=1e-4, atol=1e-4)
        assert cache.length == 12
        padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
        mask = torch.cat([torch.zeros(1, 3, dtype=torch.bool), torch.ones(1, 12, dtype=torch.bool)], 1)
        torch.testing.assert_close(smollm2_model(padded, attention_mask=mask).logits[:, 3:], full, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_wrong_rope_pairing_ruins_the_model(smollm2_model, hf_llama, smollm2_tokenizer):
    assert smollm2_model.config.rope_pairing == "interleaved"  # GGUF's Q/K rows are permuted for it
    ids = evaluation_tokens(smollm2_tokenizer.encode, 64)
    with torch.no_grad():
        ref = hf_llama(ids[None]).logits.argmax(-1)
        right_ppl = perplexity(smollm2_model, ids)
        smollm2_model.set_rope(rope_pairing="half")  # the same weights, the other rotation
        try:
            wrong = smollm2_model(ids[None]).logits.argmax(-1)
            wrong_ppl = perplexity(smollm2_model, ids)
        finally:
            smollm2_model.set_rope(rope_pairing="interleaved")
    agreement = (wrong == ref).float().mean().item()
    print(f"wrong RoPE pairing: top-1 agreement {agreement:.2f}, perplexity {wrong_ppl:.1f} (right: {right_ppl:.1f})")
    assert agreement < 0.5
    assert wrong_ppl > 3 * right_ppl


@pytest.mark.slow
def test_perplexity_matches_hf(smollm2_model, hf_llama, smollm2_tokenizer):
    ids = evaluation_tokens(smollm2_tokenizer.encode, 256)
    ours, ref = perplexity(smollm2_model, ids, window=128), perplexity(hf_llama, ids, window=128)
    assert ours == pytest.approx(ref, rel=1e-4)
    assert 2 < ours < 50


_LLAMA_CPP_SCRIPT = """
import sys, numpy as np, llama_cpp
path, out, ids = sys.argv[1], sys.argv[2], [int(i) for i in sys.argv[3].split(",")]
llm = llama_cpp.Llama(model_path=path, logits_all=True, n_threads=2, n_ctx=128, verbose=False)
llm.eval(ids)
np.save(out, np.asarray(llm.scores[: len(ids)], dtype=np.float32))
"""


def llama_cpp_logits(path, ids: list[int], tmp_path) -> torch.Tensor:
    """llama.cpp's ``(T, V)`` logits, computed in a subprocess: a llama.cpp build that does not fit the CPU dies with
    SIGILL, and that must skip this test rather than kill the test run."""
    import subprocess
    import sys

    pytest.importorskip("llama_cpp")
    out = tmp_path / "scores.npy"
    done = subprocess.run([sys.executable, "-c", _LLAMA_CPP_SCRIPT, str(path), str(out), ",".join(map(str, ids))],
                          capture_output=True, text=True, timeout=300)
    if done.returncode < 0 or done.returncode == 132:
        pytest.skip(f"llama_cpp crashed (return code {done.returncode}): this build does not run on this CPU")
    assert done.returncode == 0, done.stderr[-2000:]
    import numpy as np

    return torch.from_numpy(np.load(out))


@pytest.mark.slow
def test_smollm2_agrees_with_llama_cpp(smollm2_model, smollm2_path, france_ids, tmp_path):
    ref = llama_cpp_logits(smollm2_path, france_ids[0].tolist(), tmp_path)  # (T, V)
    with torch.no_grad():
        ours = smollm2_model(france_ids).logits[0]
    top1 = (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
    corr = torch.corrcoef(torch.stack([ours.flatten(), ref.flatten()]))[0, 1].item()
    print(f"SmolLM2 lmkit vs llama.cpp: top-1 agreement {top1:.3f}, logit correlation {corr:.5f}")
    assert corr > 0.998  # llama.cpp rounds activations to 8 bits: close, not equal (FACTS: 0.9995)
    assert top1 >= 0.85
