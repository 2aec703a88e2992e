"""Tokenizer benchmark: BPE training and encoding throughput of lmkit against HF `tokenizers` and tiktoken.

    python bench/bench_tokenizers.py

Training: lmkit's incremental trainer vs HF's Rust BpeTrainer (same corpus, pattern and vocabulary
size; their merges are checked equal) vs a naive trainer that recounts every pair after each merge.
Encoding: SmolLM2's vocabulary on held-out text, lmkit (cold and warm piece cache) vs HF `tokenizers`
built from the same GGUF data (ids checked equal) vs tiktoken. tiktoken's own ``gpt2`` files need a
download, so its encoder here is built from SmolLM2's merges with the GPT-2 pattern (no digit split:
same speed class, slightly different ids). Everything runs single-threaded (``RAYON_NUM_THREADS=1``).
Writes ``lmkit/book/results/tokenizers.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # before `tokenizers` starts its thread pool
os.environ.setdefault("RAYON_RS_NUM_CPUS", "1")

import json
import time
from collections import Counter
from pathlib import Path

import regex

from lmkit import data
from lmkit.book import results as book_results
from lmkit.tokenizers import load_smollm2_tokenizer
from lmkit.tokenizers.bpe import ByteLevelBPE
from lmkit.tokenizers.pretokenize import GPT2_PATTERN, bytes_to_unicode, split_pieces

RESULTS = book_results.path("tokenizers")


def naive_train_merges(text: str, n_merges: int) -> list[tuple[str, str]]:
    """Reference trainer: after every merge, recount all pairs of all distinct words from scratch.

    Same tie rule as HF (smallest ids in HF's numbering of the byte symbols), so it learns the same merges.
    """
    alphabet = sorted(bytes_to_unicode().values())
    enc = bytes_to_unicode()
    counts = Counter(split_pieces(text, (GPT2_PATTERN,)))
    words = [[enc[b] for b in w.encode()] for w in counts]
    freqs = list(counts.values())
    rank = {c: i for i, c in enumerate(alphabet)}
    merges = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for w, f in zip(words, freqs, strict=True):
            for p in zip(w, w[1:], strict=False):
                pairs[p] += f
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], rank[p[0]], rank[p[1]]))
        merges.append(best)
        rank.setdefault(best[0] + best[1], len(rank))
        for w in words:
            i = 0
            while i < len(w) - 1:
                if w[i] == best[0] and w[i + 1] == best[1]:
                    w[i : i + 2] = [best[0] + best[1]]
                i += 1
    return merges


def hf_train(text: str, vocab_size: int) -> list[tuple[str, str]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    # Feed HF lines rather than one huge string (faster for it); cutting between "non-space, newline" and a letter
    # never cuts a GPT-2 pre-token, so the counts, and the merges, are unchanged.
    tok.train_from_iterator(regex.split(r"(?<=\S\n)(?=\p{L})", text), trainer)
    return [tuple(m) for m in json.loads(tok.to_str())["model"]["merges"]]


def best_of(fn, repeat: int = 3) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def bench_training(text: str, vocab_size: int, naive_merges: int) -> dict:
    t_lmkit, ours = best_of(lambda: ByteLevelBPE.train(text, vocab_size))
    t_hf, hf_merges = best_of(lambda: hf_train(text, vocab_size))
    assert ours.merges == hf_merges, "lmkit and HF learned different merges"
    result = {
        "corpus_chars": len(text),
        "vocab_size": vocab_size,
        "merges": len(ours.merges),
        "lmkit_s": t_lmkit,
        "hf_s": t_hf,
        "lmkit_over_hf": t_lmkit / t_hf,
    }
    if not naive_merges:
        return result
    small = 256 + naive_merges
    t_small, small_ours = best_of(lambda: ByteLevelBPE.train(text, small))
    t_naive, naive = best_of(lambda: naive_train_merges(text, naive_merges), repeat=1)
    assert naive == small_ours.merges, "the naive trainer disagrees with the incremental one"
    return {
        **result,
        "naive_merges": naive_merges,
        "naive_s": t_naive,
        "lmkit_same_merges_s": t_small,
        "naive_over_lmkit": t_naive / t_small,
    }


def smollm2_hf(tok: ByteLevelBPE):
    """HF ``tokenizers`` built from the same vocabulary and merges as lmkit's SmolLM2 tokenizer."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    hf = Tokenizer(models.BPE({t: i for i, t in enumerate(tok.vocab)}, tok.merges))
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    hf.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in tok.special_tokens])
    return hf


def bench_long_words(lengths: tuple[int, ...] = (20_000, 200_000), one_char_mb: float = 1.0) -> dict:
    """Long words, where a BPE that rescans the word after every merge is quadratic: random letters (one pre-token)
    encoded with SmolLM2's vocabulary, and training on a corpus that is one character repeated."""
    import random

    tok = load_smollm2_tokenizer()
    hf = smollm2_hf(tok)
    rng = random.Random(0)
    rows = []
    for n in lengths:
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))
        tok._cache.clear()
        t_lmkit, ids = best_of(lambda w=word: (tok._cache.clear(), tok.encode(w))[1], repeat=1)
        t_hf, hf_ids = best_of(lambda w=word: hf.encode(w).ids, repeat=1)
        assert ids == hf_ids, "lmkit and HF disagree on a long word"
        rows.append({"chars": n, "lmkit_s": t_lmkit, "hf_s": t_hf, "lmkit_over_hf": t_lmkit / t_hf})
    text = "a" * int(one_char_mb * 1e6)
    t_train, ours = best_of(lambda: ByteLevelBPE.train(text, 300), repeat=1)
    t_hf_train, hf_merges = best_of(lambda: hf_train(text, 300), repeat=1)
    assert ours.merges == hf_merges, "lmkit and HF learned different merges on one repeated character"
    return {"encode": rows, "train_one_char": {"chars": len(text), "lmkit_s": t_train, "hf_s": t_hf_train,
                                               "lmkit_over_hf": t_train / t_hf_train}}


def bench_encoding(text: str) -> dict:
    import tiktoken

    tok = load_smollm2_tokenizer()
    hf = smollm2_hf(tok)
    ranks: dict[bytes, int] = {bytes([b]): b for b in range(256)}
    for left, right in tok.merges:
        ranks.setdefault(tok.decode_bytes([tok.token_to_id(left + right)]), len(ranks))
    tik = tiktoken.Encoding("smollm2-ranks", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})

    def cold():
        tok._cache.clear()
        return tok.encode(text)

    t_cold, ids = best_of(cold)
    t_warm, _ = best_of(lambda: tok.encode(text))
    t_hf, hf_ids = best_of(lambda: hf.encode(text).ids)
    t_tik, _ = best_of(lambda: tik.encode_ordinary(text))
    assert ids == hf_ids, "lmkit and HF disagree on SmolLM2 ids"
    mb = len(text.encode()) / 1e6
    return {
        "text_mb": mb,
        "tokens": len(ids),
        "lmkit_cold_mb_s": mb / t_cold,
        "lmkit_warm_mb_s": mb / t_warm,
        "hf_mb_s": mb / t_hf,
        "tiktoken_mb_s": mb / t_tik,
        "hf_over_lmkit_cold": t_cold / t_hf,
        "tiktoken_over_lmkit_cold": t_cold / t_tik,
    }


def stdlib_source(n_chars: int) -> str:
    """A larger, more varied corpus that is always offline: the Python standard library's own source files."""
    import sysconfig

    parts, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        parts.append(path.read_text(encoding="utf-8", errors="replace"))
        total += len(parts[-1])
        if total >= n_chars:
            break
    return "\n".join(parts)[:n_chars]


def report_training(tr: dict, name: str) -> None:
    print(f"BPE training on {name}, {tr['corpus_chars']:,} chars, vocab {tr['vocab_size']} ({tr['merges']} merges):")
    print(f"  lmkit {tr['lmkit_s']:.2f} s | HF tokenizers {tr['hf_s']:.2f} s | lmkit/HF = {tr['lmkit_over_hf']:.1f}x")


def main() -> None:
    train_text = data.split_text(data.pydoc_text())[0]
    results = {
        "training": bench_training(train_text, 4000, naive_merges=200),
        "training_stdlib": bench_training(stdlib_source(3_000_000), 16000, naive_merges=0),
        "encoding": bench_encoding(data.pydoc_text()),
        "long_words": bench_long_words(),
    }
    tr, en = results["training"], results["encoding"]
    report_training(tr, "pydoc text")
    print(
        f"  first {tr['naive_merges']} merges: naive recount {tr['naive_s']:.1f} s"
        f" vs lmkit {tr['lmkit_same_merges_s']:.2f} s"
        f" -> incremental is {tr['naive_over_lmkit']:.0f}x faster"
    )
    report_training(results["training_stdlib"], "stdlib source")
    print(f"Encoding {en['text_mb']:.2f} MB of pydoc text with SmolLM2's vocabulary ({en['tokens']:,} tokens):")
    print(
        f"  lmkit cold {en['lmkit_cold_mb_s']:.2f} MB/s, warm {en['lmkit_warm_mb_s']:.2f} MB/s"
        f" | HF {en['hf_mb_s']:.2f} MB/s"
        f" | tiktoken {en['tiktoken_mb_s']:.2f} MB/s"
    )
    print(
        f"  HF is {en['hf_over_lmkit_cold']:.1f}x and tiktoken {en['tiktoken_over_lmkit_cold']:.1f}x"
        " faster than lmkit (cold)"
    )
    for row in results["long_words"]["encode"]:
        print(f"Encoding one word of {row['chars']:,} random letters: lmkit {row['lmkit_s']:.2f} s | HF "
              f"{row['hf_s']:.2f} s | lmkit/HF = {row['lmkit_over_hf']:.1f}x")
    one = results["long_words"]["train_one_char"]
    print(f"Training on {one['chars']:,} copies of one character: lmkit {one['lmkit_s']:.2f} s | HF {one['hf_s']:.2f} s"
          f" | lmkit/HF = {one['lmkit_over_hf']:.1f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
