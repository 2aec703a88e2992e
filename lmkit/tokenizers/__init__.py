"""Tokenizers from scratch, one algorithm per module, with a common interface (:class:`base.Tokenizer`).

* :mod:`~lmkit.tokenizers.char` and :mod:`~lmkit.tokenizers.word`: the two naive ends of the spectrum;
* :mod:`~lmkit.tokenizers.bpe`: byte-level BPE (GPT-2, LLaMA-3, SmolLM2), loadable from a GGUF file;
* :mod:`~lmkit.tokenizers.wordpiece`: WordPiece (BERT), loadable from a ``vocab.txt``;
* :mod:`~lmkit.tokenizers.pair_merges`: the merge trainer BPE and WordPiece share (they differ only in the score);
* :mod:`~lmkit.tokenizers.unigram`: the Unigram language model of SentencePiece (T5, ALBERT, XLNet).

The two real vocabularies the book uses load with :func:`load_smollm2_tokenizer` and :func:`load_minilm_tokenizer`,
defined here; the two classes they return are re-exported.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lmkit import assets
from lmkit.tokenizers.bpe import ByteLevelBPE
from lmkit.tokenizers.wordpiece import WordPiece

__all__ = ["ByteLevelBPE", "WordPiece", "load_minilm_tokenizer", "load_smollm2_tokenizer"]


def load_smollm2_tokenizer(path: str | Path | None = None) -> ByteLevelBPE:
    """SmolLM2's byte-level BPE (49,152 ids), read from the GGUF file (default: :func:`lmkit.assets.smollm2_gguf`).

    Reading the GGUF metadata takes a few seconds, so the tokenizer is cached: the same path gives the same object.
    """
    return _cached_gguf_tokenizer(str(Path(assets.smollm2_gguf() if path is None else path).resolve()))


@lru_cache(maxsize=4)
def _cached_gguf_tokenizer(path: str) -> ByteLevelBPE:
    return ByteLevelBPE.from_gguf(path)


def load_minilm_tokenizer(path: str | Path | None = None) -> WordPiece:
    """all-MiniLM-L6-v2's lowercasing WordPiece (30,522 ids) from its ``vocab.txt``.

    ``path`` is the ``vocab.txt`` file or the model folder (default: :func:`lmkit.assets.minilm_dir`).
    """
    path = Path(assets.minilm_dir() if path is None else path)
    return WordPiece.from_vocab_file(path / "vocab.txt" if path.is_dir() else path, lowercase=True)
