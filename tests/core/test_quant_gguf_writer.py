"""Writing a re-quantized SmolLM2 GGUF: gguf's reader loads it back; llama.cpp runs it where it is installed."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader

from lmkit.quant import ggml
from lmkit.quant.gguf_writer import requantize_gguf, tensor_type_for


def test_fallback_rule_for_rows_not_divisible_by_256():
    assert tensor_type_for((1536, 576), "Q4_K") == "Q5_0"  # like llama.cpp's llama_tensor_get_type
    assert tensor_type_for((576, 1536), "Q4_K") == "Q4_K"
    assert tensor_type_for((576, 576), "Q6_K") == "Q8_0"
    assert tensor_type_for((576,), "Q4_0") == "F32"
    with pytest.raises(ValueError):
        tensor_type_for((10, 48), "Q4_0")


@pytest.fixture(scope="module")
def q8_file(smollm2_path, tmp_path_factory):
    dst = tmp_path_factory.mktemp("gguf") / "smollm2-q8_0.gguf"
    types = requantize_gguf(smollm2_path, dst, "Q8_0")
    return dst, types


@pytest.mark.slow
def test_reader_loads_requantized_file(smollm2_path, q8_file):
    dst, types = q8_file
    src, out = GGUFReader(smollm2_path), GGUFReader(dst)
    assert len(out.tensors) == len(src.tensors) == len(types)
    for key in ("llama.block_count", "llama.embedding_length", "tokenizer.ggml.merges", "tokenizer.chat_template"):
        assert out.fields[key].contents() == src.fields[key].contents()
    assert out.fields["general.file_type"].contents() == 7  # MOSTLY_Q8_0
    by_name = {t.name: t for t in src.tensors}
    for t in out.tensors[:12]:
        assert ggml.type_name(int(t.tensor_type)) == types[t.name]
        original = ggml.read_tensor(src, t.name)
        assert np.array_equal(ggml.read_tensor(out, t.name), ggml.dequantize(ggml.quantize(original, types[t.name]),
                                                                            types[t.name]))
        assert list(t.shape) == list(by_name[t.name].shape)
    assert GGMLQuantizationType(int(out.tensors[0].tensor_type)).name in ("Q8_0", "F32")


LLAMA_CHECK = textwrap.dedent(
    """
    import sys, numpy as np
    from llama_cpp import Llama
    def run(path):
        m = Llama(model_path=path, n_ctx=128, n_threads=2, logits_all=True, verbose=False)
        toks = m.tokenize(b"The capital of France is Paris. The capital of Italy is", add_bos=False)
        m.eval(toks)
        return np.array(m.scores[: len(toks)])
    a, b = run(sys.argv[1]), run(sys.argv[2])
    print(np.corrcoef(a.ravel(), b.ravel())[0, 1], (a.argmax(1) == b.argmax(1)).mean())
    """
)


@pytest.mark.slow
def test_llama_cpp_runs_requantized_file(smollm2_path, q8_file):
    pytest.importorskip("llama_cpp")
    done = subprocess.run([sys.executable, "-c", LLAMA_CHECK, str(smollm2_path), str(q8_file[0])],
                          capture_output=True, text=True, timeout=300)
    if done.returncode < 0:  # a llama.cpp build using CPU instructions this machine lacks dies with SIGILL
        pytest.skip(f"llama_cpp crashed with signal {-done.returncode} on this machine")
    assert done.returncode == 0, done.stderr
    corr, top1 = map(float, done.stdout.split())
    assert corr > 0.99 and top1 > 0.9  # Q8_0 re-quantization of the Q4_1 weights barely changes the logits
