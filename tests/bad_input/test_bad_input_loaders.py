"""Model loaders under bad input, and a GGUF loader check whose reference does not come from lmkit.

A tiny random Hugging Face ``LlamaForCausalLM`` with unusual settings (RMSNorm epsilon 0.25, RoPE base 500) is
written to GGUF here, the way llama.cpp's ``convert_hf_to_gguf.py`` does it (Q/K rows permuted for interleaved
RoPE, names mapped to ``blk.N.*``); lmkit's SmolLM2 loader must read it back into a model whose logits equal HF's.
The HF model is built from its own config, not from anything lmkit parsed, so a loader that ignores the file's
epsilon or RoPE base fails. Then the same file, corrupted one setting or tensor at a time, must be rejected with a
message naming the file and the problem.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from lmkit.loaders.gguf_file import GGUFError
from lmkit.loaders.smollm2 import load_smollm2

transformers = pytest.importorskip("transformers")

CFG = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=0.25, rope_theta=500.0,
           tie_word_embeddings=True)


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**CFG)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)  # not all ones, so a misplaced norm weight shows
            else:
                p.normal_(0.0, 0.5)  # larger than the default init: peaked attention and logits of size ~1, so
                # RoPE's base and the norm's epsilon change the logits far beyond the tolerance
    return model


def _permute(w: torch.Tensor, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's ``LlamaModel.permute``: HF's half-split rows -> interleaved RoPE pairs."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)).numpy()


def hf_to_gguf(model, path: Path, meta: dict | None = None, tensors: dict | None = None, drop=(), nan=None) -> Path:
    c = model.config
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    out = {"token_embd.weight": sd["model.embed_tokens.weight"].numpy(),
           "output_norm.weight": sd["model.norm.weight"].numpy()}
    local = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(c.num_hidden_layers):
        for hf, gg in local.items():
            w = sd[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                w = _permute(w, c.num_attention_heads)
            elif gg == "attn_k":
                w = _permute(w, c.num_key_value_heads)
            out[f"blk.{i}.{gg}.weight"] = np.asarray(w)
    out.update(tensors or {})
    for name in drop:
        out.pop(name)
    if nan is not None:
        out[nan] = out[nan].copy()
        out[nan].reshape(-1)[3] = np.nan
    values = {"llama.vocab_size": c.vocab_size, "llama.embedding_length": c.hidden_size,
              "llama.feed_forward_length": c.intermediate_size, "llama.block_count": c.num_hidden_layers,
              "llama.attention.head_count": c.num_attention_heads,
              "llama.attention.head_count_kv": c.num_key_value_heads,
              "llama.context_length": c.max_position_embeddings, "llama.rope.freq_base": float(CFG["rope_theta"]),
              "llama.attention.layer_norm_rms_epsilon": c.rms_norm_eps}
    values.update(meta or {})
    w = gguf.GGUFWriter(str(path), "llama")
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_uint32(key, value)
    for name, arr in out.items():
        w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("rope_pairing", ["interleaved", "half"])
def test_gguf_loader_matches_hf_built_from_its_own_config(hf_model, tmp_path, rope_pairing):
    path = hf_to_gguf(hf_model, tmp_path / "tiny.gguf")
    ours = load_smollm2(path, rope_pairing=rope_pairing)
    ids = torch.randint(0, 64, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf_model(ids).logits
        torch.testing.assert_close(ours(ids).logits, ref, rtol=1e-4, atol=1e-4)
        for setting in ({"rope_theta": 10000.0}, {"rms_norm_eps": 1e-5}):  # the test can tell the settings apart
            other = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**CFG, **setting})).eval()
            other.load_state_dict(hf_model.state_dict())
            assert (other(ids).logits - ref).abs().max() > 1e-2, setting


THETA_RANGE = r"freq_base must be a finite number in \(1.0, 1000000000.0\]"
BAD_META = {
    "rope base NaN": ({"llama.rope.freq_base": float("nan")}, "llama.rope.freq_base must be a finite number"),
    "rope base zero": ({"llama.rope.freq_base": 0.0}, THETA_RANGE + ", got 0.0"),
    "rope base tiny": ({"llama.rope.freq_base": 3e-34}, THETA_RANGE + r", got 3.0\d*e-34"),
    "rope base one": ({"llama.rope.freq_base": 1.0}, r"llama.rope.freq_base must be a finite number in \(1.0, "),
    "rope base huge": ({"llama.rope.freq_base": 1e12}, r"llama.rope.freq_base must be .*got 99999999\d+"),
    "rope base negative": ({"llama.rope.freq_base": -1e4}, "llama.rope.freq_base"),
    "rope base inf": ({"llama.rope.freq_base": float("inf")}, "llama.rope.freq_base must be a finite"),
    "eps zero": ({"llama.attention.layer_norm_rms_epsilon": 0.0}, "layer_norm_rms_epsilon"),
    "eps huge": ({"llama.attention.layer_norm_rms_epsilon": 5.0}, "layer_norm_rms_epsilon"),
    "eps NaN": ({"llama.attention.layer_norm_rms_epsilon": float("nan")}, "layer_norm_rms_epsilon"),
    "block count too high": ({"llama.block_count": 3}, "block_count is 3, but the file has tensors for blocks"),
    "block count too low": ({"llama.block_count": 1}, "block_count is 1"),
    "block count zero": ({"llama.block_count": 0}, "llama.block_count must be (an int >= 1|a positive int)"),
    "heads do not divide width": ({"llama.attention.head_count": 3}, "heads must divide the width"),
    "kv heads do not divide heads": ({"llama.attention.head_count_kv": 3}, "multiple of the 3 KV heads"),
    "zero heads": ({"llama.attention.head_count": 0}, "head_count must be (an int >= 1|a positive int)"),
    "context zero": ({"llama.context_length": 0}, "context_length must be (an int >= 1|a positive int)"),
    "vocab missing": ({"llama.vocab_size": None}, "no metadata key 'llama.vocab_size'"),
    "eps missing": ({"llama.attention.layer_norm_rms_epsilon": None}, "no metadata key"),
    "count as text": ({"llama.block_count": "two"}, "llama.block_count' should be int"),
    "theta as text": ({"llama.rope.freq_base": "big"}, "freq_base' should be float"),
    "other architecture": ({"general.architecture": "gpt2"}, "llama-architecture"),
    "vocab wrong": ({"llama.vocab_size": 65}, "token_embd.weight.*shape"),
    "ffn wrong": ({"llama.feed_forward_length": 40}, "ffn_.*shape"),
}


@pytest.mark.parametrize("case", sorted(BAD_META))
def test_bad_gguf_config_is_named(case, hf_model, tmp_path):
    meta, message = BAD_META[case]
    if "general.architecture" in meta:
        path = hf_to_gguf(hf_model, tmp_path / "bad.gguf")
        length = b"\x05\x00\x00\x00\x00\x00\x00\x00"
        data = path.read_bytes().replace(length + b"llama", length + b"gpt2x", 1)
        path.write_bytes(data)
        message = "gpt2x"
    else:
        path = hf_to_gguf(hf_model, tmp_path / "bad.gguf", meta=meta)
    with pytest.raises(GGUFError, match=message) as info:
        load_smollm2(path)
    assert str(path) in str(info.value)


BAD_TENSORS = {
    "missing q": (dict(drop=["blk.1.attn_q.weight"]), "no tensor 'blk.1.attn_q.weight'"),
    "missing norm": (dict(drop=["output_norm.weight"]), "no tensor 'output_norm.weight'"),
    "extra tensor": (dict(tensors={"blk.0.attn_q.bias": np.zeros(32, np.float32)}), "attn_q.bias.*not part"),
    "NaN weight": (dict(nan="blk.0.ffn_down.weight"), "ffn_down.weight.*non-finite"),
    "NaN norm": (dict(nan="blk.1.attn_norm.weight"), "attn_norm.weight.*non-finite"),
    "wrong shape": (dict(tensors={"blk.0.attn_v.weight": np.zeros((8, 32), np.float32)}), "attn_v.weight.*shape"),
}


@pytest.mark.parametrize("case", sorted(BAD_TENSORS))
def test_bad_gguf_tensors_are_named(case, hf_model, tmp_path):
    kwargs, message = BAD_TENSORS[case]
    path = hf_to_gguf(hf_model, tmp_path / "bad.gguf", **kwargs)
    with pytest.raises(GGUFError, match=message) as info:
        load_smollm2(path)
    assert str(path) in str(info.value)


def test_truncated_model_file_is_named(hf_model, tmp_path):
    path = hf_to_gguf(hf_model, tmp_path / "cut.gguf")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(GGUFError, match="truncated"):
        load_smollm2(path)


# ------------------------------------------------------------------------------------------ safetensors / HF folders

@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    """A tiny random HF BertModel saved with save_pretrained (config.json + model.safetensors), 2 layers."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=24, max_position_embeddings=32)
    folder = tmp_path_factory.mktemp("bert")
    transformers.BertModel(config).eval().save_pretrained(folder)
    return folder


def _copy(folder: Path, tmp_path: Path) -> Path:
    import shutil

    out = tmp_path / "model"
    shutil.copytree(folder, out)
    return out


def _edit_config(**changes):
    def edit(folder: Path) -> None:
        import json

        cfg = json.loads((folder / "config.json").read_text())
        for k, v in changes.items():
            if v is None:
                cfg.pop(k)
            else:
                cfg[k] = v
        (folder / "config.json").write_text(json.dumps(cfg))
    return edit


def _edit_tensors(fn):
    def edit(folder: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(folder / "model.safetensors")
        fn(tensors)
        save_file(tensors, folder / "model.safetensors")
    return edit


def _write(name: str, text: bytes):
    def edit(folder: Path) -> None:
        (folder / name).write_bytes(text)
    return edit


def _nan(name: str):
    def fn(t):
        t[name] = t[name].clone()
        t[name].view(-1)[0] = float("nan")
    return fn


INT_RULE = "{} must be (an int|a positive int)"
BAD_FOLDERS = {
    "config 1 layer, file 2": (_edit_config(num_hidden_layers=1), ValueError, "config does not use.*encoder.layer.1"),
    "config 3 layers, file 2": (_edit_config(num_hidden_layers=3), ValueError, "no tensor 'encoder.layer.2"),
    "config wider than file": (_edit_config(hidden_size=32), ValueError, "shape .* config needs"),
    "config vocab disagrees": (_edit_config(vocab_size=60), ValueError, "word_embeddings.weight' has shape"),
    "config JSON malformed": (_write("config.json", b'{"hidden_size": 16,'), ValueError,
                              "config.json is not valid JSON"),
    "config JSON not UTF-8": (_write("config.json", b"\xff\xfe{}"), ValueError, "not valid JSON"),
    "config a list": (_write("config.json", b"[1, 2]"), ValueError, "must be a JSON object"),
    "config key missing": (_edit_config(num_attention_heads=None), ValueError, "no 'num_attention_heads'"),
    "config count negative": (_edit_config(num_hidden_layers=-2), ValueError, INT_RULE.format("num_hidden_layers")),
    "config count a bool": (_edit_config(num_hidden_layers=True), ValueError, INT_RULE.format("num_hidden_layers")),
    "config count a float": (_edit_config(intermediate_size=24.5), ValueError, INT_RULE.format("intermediate_size")),
    "config heads do not divide": (_edit_config(num_attention_heads=3), ValueError, "must divide hidden_size"),
    "config eps zero": (_edit_config(layer_norm_eps=0), ValueError, "layer_norm_eps"),
    "config activation unknown": (_edit_config(hidden_act="swish2"), ValueError, "unsupported activation"),
    "tensor missing": (_edit_tensors(lambda t: t.pop("encoder.layer.0.attention.self.key.bias")), ValueError,
                       "no tensor 'encoder.layer.0.attention.self.key.bias'"),
    "extra tensor": (_edit_tensors(lambda t: t.update({"encoder.layer.0.extra.weight": torch.zeros(2)})),
                     ValueError, "extra.weight"),
    "int tensor": (_edit_tensors(lambda t: t.update({"embeddings.LayerNorm.weight": torch.ones(16).int()})),
                   TypeError, "embeddings.LayerNorm.weight' is torch.int32"),
    "bool tensor": (_edit_tensors(lambda t: t.update({"encoder.layer.1.output.dense.bias": torch.ones(16) > 0})),
                    TypeError, "output.dense.bias' is torch.bool"),
    "NaN tensor": (_edit_tensors(_nan("encoder.layer.1.intermediate.dense.weight")), ValueError,
                   "intermediate.dense.weight.*non-finite"),
    "truncated weights": (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:300]),
                          ValueError, "not a readable safetensors file"),
    "weights not safetensors": (_write("model.safetensors", b"PK\x03\x04 a zip file"), ValueError, "not a readable"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), FileNotFoundError, "must contain"),
    "no config": (lambda f: (f / "config.json").unlink(), FileNotFoundError, "must contain"),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_bad_bert_folder_is_named(case, bert_folder, tmp_path):
    from lmkit.loaders.minilm import load_minilm

    edit, error, message = BAD_FOLDERS[case]
    folder = _copy(bert_folder, tmp_path)
    edit(folder)
    with pytest.raises(error, match=message) as info:
        load_minilm(folder)
    assert str(folder) in str(info.value)


def test_good_bert_folder_matches_transformers(bert_folder):
    from lmkit.loaders.minilm import load_minilm

    ours = load_minilm(bert_folder)
    ref = transformers.BertModel.from_pretrained(bert_folder).eval()
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).hidden_states, ref(ids).last_hidden_state, rtol=1e-5, atol=1e-5)


def test_a_file_given_as_the_folder_is_named(bert_folder):
    from lmkit.loaders.minilm import load_minilm

    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_minilm(bert_folder / "config.json")
