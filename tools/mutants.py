"""The mutation audit's named mutants, applied one at a time: does some test fail for each small plausible bug?

    python tools/mutants.py                 # every mutant below; prints killed / survived and a score
    python tools/mutants.py gptq_act_order  # only the named ones
    python tools/mutants.py --list

Each mutant is one textual edit of one lmkit file (``old`` must occur exactly once) and the tests that should catch
it. The edit is made in a private copy of ``lmkit/`` and ``tests/`` (never in the working tree, which other people
and test runs are reading), the tests run there, and the mutant counts as *killed* when they fail. A baseline run
without any edit must pass first, or the verdicts would mean nothing. ``make mutants`` runs this and, on a few core
modules, ``mutmut`` (which invents its own mutants).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments: files, node ids, -k expressions
    what: str


BAD = "tests/bad_input/"
REFERENCES, BAD_INPUT = BAD + "test_bad_input_references.py", BAD + "test_bad_input.py"
LOADERS, CHECKPOINTS = BAD + "test_bad_input_loaders.py", BAD + "test_bad_input_checkpoints.py"
GGML = "tests/core/test_quant_ggml.py"


MUTANTS = [
    Mutant("gptq_act_order_ascending", "lmkit/quant/gptq.py",
           "torch.argsort(torch.diag(H), descending=True, stable=True)",
           "torch.argsort(torch.diag(H), descending=False, stable=True)",
           (REFERENCES, "-k", "gptq"), "GPTQ's act-order sorts ascending"),
    Mutant("gptq_damp_max", "lmkit/quant/gptq.py", "H.diagonal().add_(damp * torch.diag(H).mean())",
           "H.diagonal().add_(damp * torch.diag(H).max())",
           (REFERENCES, "-k", "gptq"), "GPTQ's dampening from max, not mean, of diag H"),
    Mutant("awq_clip_unscaled", "lmkit/quant/awq.py", "h = hessian / scales[:, None] / scales[None, :]",
           "h = hessian", (REFERENCES, "-k", "awq"),
           "AWQ's clip search on the unscaled statistics"),
    Mutant("nf4_double_quant_no_mean", "lmkit/quant/nf4.py", "offset = absmax.mean()",
           "offset = absmax.mean() * 0", (REFERENCES, "-k", "nf4"),
           "NF4 double quantization without subtracting the mean of the absmax values"),
    Mutant("nf4_overflow_unreported", "lmkit/quant/nf4.py", "if not torch.isfinite(offset):", "if False:",
           (BAD_INPUT, "-k", "nf4_double_quant"), "NF4's double-quantization overflow is not reported"),
    Mutant("q4k_weights_without_rms", "lmkit/quant/ggml.py", "weights = av_x[:, None] + np.abs(sub)",
           "weights = np.abs(sub)", (GGML, "-k", "stored_llama_cpp_output"),
           "Q4_K's search weights |x| without the sub-block RMS (caught without llama.cpp by its stored bytes)"),
    Mutant("q4k_search_step_0_2", "lmkit/quant/ggml.py", "_make_qkx2_quants(sub, weights, 15, -1.0, 0.1, 20)",
           "_make_qkx2_quants(sub, weights, 15, -1.0, 0.2, 20)",
           (GGML, "-k", "stored_llama_cpp_output"),
           "Q4_K's scale search in steps of 0.2 (caught without llama.cpp by its stored bytes)"),
    Mutant("q4k_nibbles_swapped", "lmkit/quant/ggml.py", "qs = (L[:, :, 0] | (L[:, :, 1] << 4)).reshape(nb, 128)",
           "qs = (L[:, :, 1] | (L[:, :, 0] << 4)).reshape(nb, 128)",
           (GGML, "-k", "satisfy_the_format"), "Q4_K's two sub-blocks swapped in the nibbles"),
    Mutant("q6k_no_requantization", "lmkit/quant/ggml.py",
           "requant = np.clip(_nearest_int(x.reshape(nb, 16, 16) / d[..., None]), -32, 31) + 32",
           "requant = L.reshape(nb, 16, 16)", (GGML, "-k", "satisfy_the_format"),
           "Q6_K keeps the search's codes instead of re-rounding to the stored fp16 scales"),
    Mutant("int8_threshold_strict", "lmkit/quant/int8_matmul.py", "(x.abs() >= threshold).any(dim=0)",
           "(x.abs() > threshold).any(dim=0)", (REFERENCES, "-k", "int8"),
           "LLM.int8's outlier threshold > instead of >="),
    Mutant("int8_scale_128", "lmkit/quant/int8_matmul.py", "torch.round(x.float() * (127.0 /",
           "torch.round(x.float() * (128.0 /", (REFERENCES, "-k", "int8"),
           "LLM.int8's activations scaled by 128 instead of 127"),
    Mutant("adam8_v_signed", "lmkit/quant/dynamic8.py", "v = quantize_blockwise(v, self.block_size, signed=False)",
           "v = quantize_blockwise(v, self.block_size, signed=True)",
           (REFERENCES, "-k", "adam"), "8-bit Adam's second moment with the signed map"),
    Mutant("perplexity_count_off_by_one", "lmkit/training/evaluation.py",
           "token_nll(model, token_ids, window).double().nanmean().item()",
           "(token_nll(model, token_ids, window).double().nansum() / (token_ids.numel() - 1)).item()",
           (REFERENCES, "-k", "perplexity"),
           "perplexity's token count off by one per window"),
    Mutant("smollm2_ignores_norm_eps", "lmkit/loaders/smollm2.py",
           'norm_eps=number("llama.attention.layer_norm_rms_epsilon", above=0.0, maximum=1.0),',
           'norm_eps=1e-5 or number("llama.attention.layer_norm_rms_epsilon", above=0.0, maximum=1.0),',
           (LOADERS, "-k", "matches_hf"), "the SmolLM2 loader ignores the GGUF's epsilon"),
    Mutant("smollm2_ignores_rope_theta", "lmkit/loaders/smollm2.py",
           'rope_theta=number("llama.rope.freq_base", above=0.0),',
           'rope_theta=10000.0 or number("llama.rope.freq_base", above=0.0),',
           (LOADERS, "-k", "matches_hf"), "the SmolLM2 loader ignores the GGUF's RoPE base"),
    Mutant("wordpiece_worst_pair", "lmkit/tokenizers/pair_merges.py",
           "return min(candidates, key=lambda p: (-score(counts, p), p))",
           "return max(candidates, key=lambda p: (-score(counts, p), p))",
           (REFERENCES, "-k", "wordpiece"), "WordPiece training merges the worst pair"),
    Mutant("unigram_one_em_iteration", "lmkit/tokenizers/unigram.py", "em_iterations: int = 2,",
           "em_iterations: int = 1,", (REFERENCES, "-k", "unigram"),
           "Unigram training with one EM iteration"),
    Mutant("beam_never_as_false", "lmkit/decoding/beam.py",
           'if self.early_stopping == "never" and self.length_penalty > 0:', "if False:",
           ("tests/core/test_decoding_generate.py", "-k", "early_stopping_never"),
           'beam search\'s early_stopping="never" behaves like False'),
    Mutant("triton_window_off_by_one", "lmkit/efficient/flash_triton.py",
           "valid = valid & (cols[None, :] > rows[:, None] + offset - window)",
           "valid = valid & (cols[None, :] >= rows[:, None] + offset - window)",
           ("tests/core/test_flash_triton.py",), "the Triton kernel's sliding-window bound off by one"),
    Mutant("triton_mask_rows_unchecked", "lmkit/efficient/flash_triton.py",
           "m = tl.load(mask_ptrs, mask=valid & (rows[:, None] < n_q), other=0)",
           "m = tl.load(mask_ptrs, mask=valid, other=0)",
           ("tests/core/test_flash_triton.py", "-k", "float_bias"), "the bias load past the last query row"),
    Mutant("flash_nan_as_zero", "lmkit/efficient/flash.py", "seen = l != 0", "seen = l > 0",
           (BAD_INPUT, "-k", "nan_inputs"), "flash attention turns NaN rows into zeros"),
    Mutant("bpe_heap_ignores_position", "lmkit/tokenizers/bpe.py",
           "heapq.heappush(heap, (r[0], i, r[1]))", "heapq.heappush(heap, (r[0], -i, r[1]))",
           (REFERENCES, "-k", "bpe"), "BPE's queue loses the leftmost-first tie rule"),
    Mutant("checkpoint_stale_tmp_kept", "lmkit/training/checkpoint.py",
           "_tmp_path(path).unlink(missing_ok=True)  # a killed save's leftover", "pass  # a killed save's leftover",
           (CHECKPOINTS, "-k", "point and before_replace"),
           "load leaves a killed save's temporary file behind"),
    Mutant("checkpoint_settings_unchecked", "lmkit/training/checkpoint.py", "    if changed:\n", "    if False:\n",
           (CHECKPOINTS, "-k", "changed"), "a changed optimizer setting is not reported"),
    Mutant("rmsnorm_drops_eps", "lmkit/transformer/norms.py",
           "torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)",
           "torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 0 * self.eps)",
           (REFERENCES, "-k", "norms"), "RMSNorm drops its epsilon"),
    Mutant("gguf_no_overlap_check", "lmkit/loaders/gguf_file.py", "if offset != expected_offset:",
           "if offset < 0:", (BAD_INPUT, "-k", "corrupted_gguf"),
           "the GGUF opener stops checking tensor offsets"),
]


def _copy_tree(dst: Path) -> None:
    for name in ("lmkit", "tests"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml",):
        shutil.copy(ROOT / name, dst / name)


def _pytest(work: Path, args: tuple[str, ...], timeout: float) -> tuple[str, float]:
    """Run pytest in ``work`` (its ``lmkit`` shadows the installed one: the cwd comes first on ``sys.path``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args]
    t0 = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - t0
    if done.returncode == 0:
        return "passed", time.monotonic() - t0
    if done.returncode == 5:
        return "no tests", time.monotonic() - t0
    return "failed", time.monotonic() - t0


def run(mutants: list[Mutant], timeout: float) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="lmkit-mutants-") as tmp:
        work = Path(tmp)
        _copy_tree(work)
        check = subprocess.run([sys.executable, "-c", "import lmkit; print(lmkit.__file__)"], cwd=work,
                               capture_output=True, text=True)
        if not check.stdout.strip().startswith(str(work)):
            raise SystemExit(f"the copy's lmkit is not the one imported ({check.stdout.strip()}): aborting")
        for m in mutants:
            target = work / m.path
            original = target.read_text(encoding="utf-8")
            if original.count(m.old) != 1:
                rows.append({"name": m.name, "verdict": "stale (the code changed)", "what": m.what})
                continue
            baseline, _ = _pytest(work, m.tests, timeout)
            if baseline != "passed":
                rows.append({"name": m.name, "verdict": f"baseline {baseline}", "what": m.what})
                continue
            target.write_text(original.replace(m.old, m.new), encoding="utf-8")
            try:
                outcome, seconds = _pytest(work, m.tests, timeout)
            finally:
                target.write_text(original, encoding="utf-8")
            verdict = {"failed": "killed", "timeout": "killed (timeout)", "passed": "survived"}.get(outcome, outcome)
            rows.append({"name": m.name, "verdict": verdict, "seconds": round(seconds, 1), "what": m.what})
            print(f"{m.name:34s} {verdict:18s} {seconds:6.1f} s  {m.what}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--json", type=Path, help="also write the verdicts here")
    ns = parser.parse_args()
    if ns.list:
        for m in MUTANTS:
            print(f"{m.name:34s} {m.path:32s} {m.what}")
        return
    unknown = set(ns.names) - {m.name for m in MUTANTS}
    if unknown:
        raise SystemExit(f"unknown mutants {sorted(unknown)}; see --list")
    chosen = [m for m in MUTANTS if not ns.names or m.name in ns.names]
    rows = run(chosen, ns.timeout)
    judged = [r for r in rows if r["verdict"].startswith(("killed", "survived"))]
    killed = sum(r["verdict"].startswith("killed") for r in judged)
    print(f"\n{killed} of {len(judged)} mutants killed"
          + (f"; not judged: {[r['name'] for r in rows if r not in judged]}" if len(judged) < len(rows) else ""))
    if ns.json:
        ns.json.write_text(json.dumps(rows, indent=2) + "\n")
    sys.exit(0 if killed == len(judged) == len(rows) else 1)


if __name__ == "__main__":
    main()
