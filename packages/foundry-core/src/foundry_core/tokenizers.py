"""Tokenizers: one place for special tokens, loading a local HF tokenizer folder, training a byte-level BPE.

Every tokenizer Foundry uses is a Hugging Face ``PreTrainedTokenizerFast`` (saved as a folder), so
``transformers`` and Foundry load it the same way. ``load_tokenizer("byte")`` builds a byte-level
tokenizer (256 byte tokens + the special tokens) in memory: it needs no files, which makes recipes
and tests runnable from a fresh clone. Nothing is downloaded (``local_files_only``).

Test: ``uv run pytest packages/foundry-core/tests/test_llm_tokenizers.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from foundry_core.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

#: Special tokens every Foundry-trained tokenizer carries. ``image``/``action`` are placeholders that
#: the VLM/VLA stages replace with image patch / action embeddings.
SPECIAL_TOKENS: dict[str, str] = {
    "bos": "<|bos|>",
    "eos": "<|endoftext|>",
    "pad": "<|pad|>",
    "image": "<image>",
    "action": "<action>",
}
#: Name accepted by :func:`load_tokenizer` for the built-in byte-level tokenizer.
BYTE_TOKENIZER = "byte"


def _wrap(tok: object) -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        pad_token=SPECIAL_TOKENS["pad"],
        extra_special_tokens={"image_token": SPECIAL_TOKENS["image"], "action_token": SPECIAL_TOKENS["action"]},
    )


def _special_list() -> list[str]:
    return list(SPECIAL_TOKENS.values())


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: ids 0..255 are the bytes (GPT-2 byte alphabet), then the special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(_special_list())
    return _wrap(tok)


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and (when ``out_dir`` is given) save it as a HF tokenizer folder.

    ``vocab_size`` counts the 256 byte tokens and the :data:`SPECIAL_TOKENS`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    minimum = 256 + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ConfigError(f"train_bpe: vocab_size must be >= {minimum} (256 bytes + special tokens), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=_special_list(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    wrapped = _wrap(tok)
    if out_dir is not None:
        wrapped.save_pretrained(str(out_dir))
    return wrapped


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load a local HF tokenizer folder, or build the byte tokenizer for ``"byte"``. Never downloads."""
    if str(path) == BYTE_TOKENIZER:
        return byte_tokenizer()
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"tokenizer folder not found: {folder} (give a local HF tokenizer folder or 'byte')")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load tokenizer from {folder}: {exc}") from None


def check_vocab(tokenizer: PreTrainedTokenizerBase, vocab_size: int, where: str) -> None:
    """A tokenizer whose ids do not fit the model's embedding table is an error naming both sizes."""
    n = len(tokenizer)
    if n > vocab_size:
        raise ConfigError(
            f"{where}: tokenizer has {n} tokens but the model's vocab_size is {vocab_size}; "
            f"set vocab_size >= {n} or use the matching tokenizer"
        )


def eos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The end-of-document id appended after each document when packing."""
    eid = tokenizer.eos_token_id
    if eid is None:
        raise ConfigError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no eos token")
    return int(eid)
