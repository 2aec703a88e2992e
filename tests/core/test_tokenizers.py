"""Byte-level BPE and WordPiece against HF `tokenizers` (and llama.cpp) on the real vocabularies and on training."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmkit import data
from lmkit.tokenizers import load_minilm_tokenizer, load_smollm2_tokenizer
from lmkit.tokenizers.bpe import ByteLevelBPE
from lmkit.tokenizers.pair_merges import PairCounts, learn_merges, pair_count
from lmkit.tokenizers.pretokenize import GPT2_PATTERN, GPT4_PATTERN, PATTERNS, bytes_to_unicode, split_pieces
from lmkit.tokenizers.wordpiece import (
    WordPiece,
    _word_alphabet,
    bert_normalize,
    bert_pre_tokenize,
    likelihood_gain,
    train_wordpiece_vocab,
)

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, trainers  # noqa: E402

# Strings that exercise the corners: accents, emoji (with skin tone and flag sequences), CJK and Hangul,
# whitespace runs and CRLF, digits next to letters, contractions, zero-width and control characters.
HARD_STRINGS = [
    "héllo wörld naïve café Ñandú Ångström",
    "😀👍🏽 emoji 🇫🇷 flags 👩‍👩‍👧 family",
    "日本語のテキスト 中文字符 한국어 텍스트",
    "  lots   of\t\tspaces \n\n\n  and\r\nCRLF   ",
    "x  \n 5 a 12 b 3.14159 1,000,000 abc123def 2024-11-24",
    "don't I'll we've THEY'RE you'd it's",
    "\u200b\u00a0nbsp zero\u200dwidth\x07 bell \x00 nul \ufffd",
    "ﬁ ligature Ǆ İstanbul ß ΣΑΣ ǅ",
    "def f(x):\n    return x ** 2  # comment\n\tif a != b: pass",
    "a" * 150,
    "",
    " ",
]
CORPUS = [data.pydoc_text(), *HARD_STRINGS]


@pytest.fixture(scope="module")
def smollm2():
    return load_smollm2_tokenizer()


@pytest.fixture(scope="module")
def smollm2_hf(smollm2):
    """HF `tokenizers` built from the same GGUF tokens and merges, with SmolLM2's pre-tokenizer
    (individual digits, then GPT-2's byte-level regex), as in SmolLM2's own tokenizer.json."""
    hf = tokenizers.Tokenizer(models.BPE({t: i for i, t in enumerate(smollm2.vocab)}, smollm2.merges))
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in smollm2.special_tokens])
    return hf


def test_bytes_to_unicode_matches_hf_byte_level_alphabet():
    assert sorted(bytes_to_unicode().values()) == sorted(pre_tokenizers.ByteLevel.alphabet())
    assert bytes_to_unicode()[ord(" ")] == "Ġ" and bytes_to_unicode()[ord("\n")] == "Ċ"


@pytest.mark.parametrize("text", HARD_STRINGS[:9])
def test_gpt2_pattern_matches_hf_byte_level_split(text):
    hf = pre_tokenizers.ByteLevel(add_prefix_space=False)
    enc = bytes_to_unicode()
    ours = ["".join(enc[b] for b in p.encode()) for p in split_pieces(text, (GPT2_PATTERN,))]
    assert ours == [p for p, _ in hf.pre_tokenize_str(text)]


@pytest.mark.slow
def test_smollm2_metadata(smollm2):
    assert smollm2.vocab_size == 49152
    assert len(smollm2.merges) == 48900
    assert smollm2.eos_id == 2 and smollm2.id_to_token(1) == "<|im_start|>"
    assert list(smollm2.special_tokens.values()) == list(range(17))


@pytest.mark.slow
def test_smollm2_encode_matches_hf_tokenizers(smollm2, smollm2_hf):
    for text in CORPUS:
        assert smollm2.encode(text) == smollm2_hf.encode(text).ids, text[:40]


@pytest.mark.slow
def test_smollm2_special_tokens(smollm2, smollm2_hf):
    chat = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi 42!<|im_end|>\n<|endoftext|>"
    ids = smollm2.encode(chat, allowed_special="all")
    assert ids == smollm2_hf.encode(chat).ids
    assert ids[0] == 1 and ids.count(2) == 2 and ids[-1] == 0
    assert smollm2.decode(ids) == chat
    # not allowed: the same characters are ordinary text, several ids
    plain = smollm2.encode("<|im_end|>", allowed_special="none")
    assert len(plain) > 1 and smollm2.decode(plain) == "<|im_end|>"
    assert smollm2.encode("<|im_end|>", allowed_special={"<|im_end|>"}) == [2]
    with pytest.raises(ValueError, match="unknown special token"):
        smollm2.encode("hi", allowed_special={"<|not_a_token|>"})


@pytest.mark.slow
def test_smollm2_decode_matches_hf(smollm2, smollm2_hf):
    for text in HARD_STRINGS:
        ids = smollm2.encode(text)
        assert smollm2.decode(ids) == smollm2_hf.decode(ids, skip_special_tokens=False)


@pytest.mark.slow
def test_smollm2_matches_llama_cpp(smollm2, smollm2_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(str(smollm2_path), vocab_only=True, verbose=False)
    for text in [data.pydoc_text()[:100_000], *HARD_STRINGS[:-2]]:
        if "\x00" in text:  # llama.cpp takes a C string
            continue
        assert smollm2.encode(text) == llm.tokenize(text.encode(), add_bos=False, special=True), text[:40]


@pytest.mark.slow
def test_minilm_wordpiece_matches_tokenizer_json(minilm_path):
    tok = load_minilm_tokenizer(minilm_path)
    hf = tokenizers.Tokenizer.from_file(str(minilm_path / "tokenizer.json"))
    hf.no_padding()
    hf.no_truncation()
    for text in [*CORPUS, "[CLS] hi [MASK] there[SEP]", "Hello, World! It's 3.5 km. Wow ?"]:
        ids = tok.encode(text)
        assert ids == hf.encode(text).ids, text[:40]
        assert tok.decode(ids) == hf.decode(ids)
    assert tok.encode("hello", add_special_tokens=False) == hf.encode("hello", add_special_tokens=False).ids


def _hf_bpe_trainer(text: str, vocab_size: int, pattern: str, specials: list[str]) -> dict:
    hf = tokenizers.Tokenizer(models.BPE())
    if pattern == "gpt2":
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(GPT4_PATTERN), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator([text], trainer)
    return json.loads(hf.to_str())["model"]


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_bpe_training_gives_hf_bpe_trainer_merges(pattern):
    """Same merges, in the same order, and the same ids.

    Equal counts are frequent (many pairs occur exactly 2 or 3 times); both trainers break such ties by
    the smallest (left id, right id), which is why lmkit numbers the byte symbols in HF's order.
    """
    text = data.split_text(data.pydoc_text())[0][:150_000]
    specials = ["<|endoftext|>"]
    ours = ByteLevelBPE.train(text, 1500, pattern=pattern, special_tokens=specials)
    ref = _hf_bpe_trainer(text, 1500, pattern, specials)
    assert ours.merges == [tuple(m) for m in ref["merges"]]
    assert ours.vocab == sorted(ref["vocab"], key=ref["vocab"].get)


def test_pair_merges_heap_equals_scan_and_a_hand_worked_example():
    """BPE's score is found with a lazy heap, any other with a scan: the same count through both gives the same
    merges. By hand: "a b a b" x2 and "b a" x1 → (a, b): 4 beats (b, a): 3; then "ab ab" x2 → (ab, ab): 2, while
    (b, a) is left only in "b a", seen once: with min_count=2 it never merges."""

    def train(words, freqs, score, min_count=1, n=None):
        words = [list(w) for w in words]
        merges = list(itertools.islice(learn_merges(words, freqs, lambda a, b: a + b, score, min_count), n))
        return merges, words

    counts = PairCounts([["a", "b", "a", "b"], ["b", "a"]], [2, 1])
    assert (dict(counts.pairs), dict(counts.symbols), counts.total) == ({("a", "b"): 4, ("b", "a"): 3},
                                                                         {"a": 5, "b": 5}, 10)
    for score in (pair_count, lambda c, p: c.pairs[p]):
        assert train([["a", "b", "a", "b"], ["b", "a"]], [2, 1], score, 2)[0] == [("a", "b"), ("ab", "ab")]
        assert train([["a", "b", "a", "b"], ["b", "a"]], [2, 1], score)[0] == [("a", "b"), ("ab", "ab"), ("b", "a")]
    pieces = Counter(split_pieces(data.pydoc_text()[:20_000], PATTERNS["gpt2"]))
    words, freqs = [list(p) for p in pieces], list(pieces.values())
    assert train(words, freqs, pair_count, n=300) == train(words, freqs, lambda c, p: c.pairs[p], n=300)


def test_trained_bpe_encodes_like_hf_with_its_vocab():
    text = data.split_text(data.pydoc_text())[0][:100_000]
    ours = ByteLevelBPE.train(text, 800)
    hf = tokenizers.Tokenizer(models.BPE({t: i for i, t in enumerate(ours.vocab)}, ours.merges))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    for s in [data.split_text(data.pydoc_text())[1][:20_000], *HARD_STRINGS]:
        assert ours.encode(s) == hf.encode(s).ids


@pytest.fixture(scope="module")
def small_bpe():
    return ByteLevelBPE.train(data.pydoc_text()[:50_000], 600, pattern="gpt4", special_tokens=["<|endoftext|>"])


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_bpe_roundtrip_arbitrary_unicode(small_bpe, s):
    assert small_bpe.decode(small_bpe.encode(s, allowed_special="none")) == s
    assert small_bpe.decode(small_bpe.encode(s)) == s


def test_bpe_save_load(small_bpe, tmp_path):
    path = tmp_path / "bpe.json"
    small_bpe.save(path)
    again = ByteLevelBPE.load(path)
    text = "Save and load 123 times 😀"
    assert again.encode(text) == small_bpe.encode(text) and again.merges == small_bpe.merges


def test_bpe_clear_errors(small_bpe, tmp_path):
    with pytest.raises(ValueError, match="smaller than the byte alphabet"):
        ByteLevelBPE.train("some text", 200)
    with pytest.raises(ValueError, match="unknown special token"):
        small_bpe.encode("x", allowed_special={"<|im_end|>"})
    with pytest.raises(TypeError):
        small_bpe.encode("x", allowed_special="some")
    good = small_bpe.to_dict()
    for bad_merge in ["Ġ", "Ġt h e", "zz qq"]:
        broken = dict(good, type="ByteLevelBPE", merges=[*good["merges"][:5], bad_merge])
        path = tmp_path / "broken.json"
        path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match="corrupted merges"):
            ByteLevelBPE.load(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a tokenizer file"):
        ByteLevelBPE.load(path)
    with pytest.raises(ValueError, match="not written in GPT-2's byte alphabet"):
        ByteLevelBPE([" space"], [])
    with pytest.raises(ValueError, match="token ids"):
        small_bpe.decode([10**9])


def test_wordpiece_training_and_encoding_match_hf_wordpiece_model(tmp_path):
    """lmkit trains a vocabulary; HF's WordPiece model with that vocabulary must encode identically."""
    text = data.pydoc_text()[:60_000]
    ours = WordPiece.train(text, 700)
    assert ours.vocab_size == 700 and ours.vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    hf = tokenizers.Tokenizer(models.WordPiece({t: i for i, t in enumerate(ours.vocab)}, unk_token="[UNK]"))
    hf.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    for s in [data.pydoc_text()[100_000:120_000], *HARD_STRINGS]:
        assert ours.encode(s, add_special_tokens=False) == hf.encode(s).ids
    ours.save(tmp_path / "wp.json")
    assert WordPiece.load(tmp_path / "wp.json").encode(text[:2000]) == ours.encode(text[:2000])
    with pytest.raises(ValueError, match="smaller than the character alphabet"):
        WordPiece.train(text, 20)
    with pytest.raises(ValueError, match="holds a 'WordPiece' tokenizer, not a ByteLevelBPE"):
        ByteLevelBPE.load(tmp_path / "wp.json")


@pytest.mark.parametrize("criterion", ["likelihood", "ratio"])
def test_wordpiece_training_equals_recounting_every_merge(criterion):
    """The incremental trainer against the idea written plainly: recount every symbol and pair of the current
    words, merge the best-scoring pair (ties: the smallest), repeat. Pins every merge, not only the first."""
    word_counts = Counter(bert_pre_tokenize(bert_normalize(data.pydoc_text()[:8000])))
    word_counts.update({"aaaaaaa": 40, "abababa": 30, "xxx": 25})  # runs: "a a a" holds (a, a) twice, merges it once
    alphabet = sorted(_word_alphabet(word_counts, "##"))
    vocab, size = list(alphabet), len(alphabet) + 80
    words, freqs = [[w[0]] + ["##" + c for c in w[1:]] for w in word_counts], list(word_counts.values())
    while len(vocab) < size:
        pairs, symbols = Counter(), Counter()
        for w, f in zip(words, freqs, strict=True):
            symbols.update({s: f * n for s, n in Counter(w).items()})
            pairs.update({p: f * n for p, n in Counter(zip(w, w[1:], strict=False)).items()})
        total = sum(symbols.values())

        def score(p, pairs=pairs, symbols=symbols, total=total):
            if criterion == "ratio":
                return pairs[p] / (symbols[p[0]] * symbols[p[1]])
            return likelihood_gain(pairs[p], symbols[p[0]], symbols[p[1]], total, p[0] == p[1])

        a, b = min((p for p, c in pairs.items() if c >= 2), key=lambda p: (-score(p), p))
        for w in words:
            i = 0
            while i < len(w) - 1:
                if w[i] == a and w[i + 1] == b:
                    w[i : i + 2] = [a + b[2:]]
                i += 1
        if a + b[2:] not in vocab:
            vocab.append(a + b[2:])
    assert train_wordpiece_vocab(word_counts, size, "##", criterion, 2) == vocab


def test_wordpiece_likelihood_gain_is_the_exact_log_likelihood_change():
    """Merging (a, b) in a toy symbol corpus: the closed form equals recomputing Σ c log(c/T) directly."""
    from collections import Counter

    from lmkit.tokenizers.wordpiece import likelihood_gain

    def loglik(symbols):
        counts, total = Counter(symbols), len(symbols)
        return sum(c * math.log(c / total) for c in counts.values())

    before = list("abxabyabzaxbq")  # (a, b) occurs 3 times; a 4 times, b 4 times
    after = ["ab", "x", "ab", "y", "ab", "z", "a", "x", "b", "q"]
    assert likelihood_gain(3, 4, 4, len(before), False) == pytest.approx(loglik(after) - loglik(before))
    with pytest.raises(ValueError, match="criterion"):
        WordPiece.train("some text here", 40, criterion="count")


# SmolLM2's vocabulary has no token for six control bytes nor for the UTF-8 lead bytes 0xF1/0xF2 (code points
# U+40000-U+BFFFF, unassigned planes); like llama.cpp and HF, encoding drops those bytes, so they cannot round-trip.
SMOLLM2_TEXT = st.text(
    st.characters(
        blacklist_characters=[chr(b) for b in (4, 6, 19, 20, 22, 29)],
        max_codepoint=0x3FFFF,
        blacklist_categories=["Cs"],
    )
)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(SMOLLM2_TEXT)
def test_smollm2_random_strings_match_hf_and_roundtrip(smollm2, smollm2_hf, s):
    ids = smollm2.encode(s)
    assert ids == smollm2_hf.encode(s).ids
    assert smollm2.decode(ids) == s


def test_patterns_split_like_tiktoken_published_patterns():
    """tiktoken ships its (possessive-quantifier) rewrites of GPT-2's and GPT-4's patterns; ours must split alike.
    The cl100k pattern sits inside a function that would download the ranks, so it is read from the source."""
    import inspect

    import regex

    openai_public = pytest.importorskip("tiktoken_ext.openai_public")
    source = inspect.getsource(openai_public.cl100k_base)
    cl100k = regex.search(r'"pat_str": r"""(.*?)"""', source).group(1)
    for text in CORPUS:
        assert split_pieces(text, (GPT2_PATTERN,)) == regex.findall(openai_public.r50k_pat_str, text)
        assert split_pieces(text, (GPT4_PATTERN,)) == regex.findall(cl100k, text)


def test_trained_bpe_encodes_like_tiktoken_with_the_same_ranks(small_bpe):
    """tiktoken applies merges by the rank of the merged byte string; give it lmkit's merges in order."""
    tiktoken = pytest.importorskip("tiktoken")
    ranks = {small_bpe.decode_bytes([small_bpe.token_to_id(c)]): b for b, c in bytes_to_unicode().items()}
    for left, right in small_bpe.merges:
        ranks.setdefault(small_bpe.decode_bytes([small_bpe.token_to_id(left + right)]), len(ranks))
    enc = tiktoken.Encoding("lmkit-test", pat_str=GPT4_PATTERN, mergeable_ranks=ranks, special_tokens={})
    as_bytes = {v: k for k, v in ranks.items()}
    for text in CORPUS:
        pieces = [small_bpe.decode_bytes([i]) for i in small_bpe.encode(text, allowed_special="none")]
        assert pieces == [as_bytes[i] for i in enc.encode_ordinary(text)]
