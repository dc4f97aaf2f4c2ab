"""Text tokenizer: a small sentencepiece model trained on the captions of a dataset.

SentencePiece (Kudo & Richardson, 2018, "SentencePiece: A simple and language independent subword
tokenizer") with byte-pair encoding by default (on a few thousand captions BPE learns whole words where
the unigram model (Kudo, 2018) still splits them; both are available). Byte fallback keeps every
string encodable (unseen characters become UTF-8 byte pieces instead of ``<unk>``), and NFKC with
case folding keeps the vocabulary small for caption-style text. sentencepiece's own BOS/EOS/PAD are
off: the LM's unified vocabulary (``kinema.lm.vocab``) owns the special tokens.

A saved tokenizer is a directory with ``config.json`` (kind ``text_tokenizer``) and
``spm.model`` (sentencepiece's protobuf; no pickle).
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import sentencepiece as spm

from kinema.checkpoint import CONFIG_NAME, atomic_write_bytes, atomic_write_text, read_config_json
from kinema.config import from_dict, to_dict
from kinema.errors import CheckpointError
from kinema.paths import default_component_dir

KIND = "text_tokenizer"
MODEL_NAME = "spm.model"


@dataclass
class TextTokenizerConfig:
    vocab_size: int = 512
    model_type: str = "bpe"   # "bpe" or "unigram"
    normalization: str = "nmt_nfkc_cf"  # NFKC + case folding
    byte_fallback: bool = True


class TextTokenizer:
    """Caption text <-> ids in ``[0, vocab_size)``."""

    def __init__(self, model_proto: bytes, cfg: TextTokenizerConfig | None = None):
        self._proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(self._proto)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError with C++ text
            raise CheckpointError(f"not a valid sentencepiece model: {e}") from None
        self.cfg = cfg or TextTokenizerConfig(vocab_size=int(self._sp.GetPieceSize()))
        self.cfg.vocab_size = int(self._sp.GetPieceSize())

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, captions: Iterable[str], vocab_size: int = 512, model_type: str = "bpe",
              normalization: str = "nmt_nfkc_cf", byte_fallback: bool = True) -> "TextTokenizer":
        """Train on ``captions``. With too little text for ``vocab_size`` pieces the vocabulary is
        smaller (read ``vocab_size`` afterwards); byte fallback needs ``vocab_size >= 300``."""
        texts = [c.strip() for c in captions if isinstance(c, str) and c.strip()]
        if not texts:
            raise ValueError("cannot train a text tokenizer on no captions")
        if model_type not in ("unigram", "bpe"):
            raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
        if byte_fallback and vocab_size < 300:
            raise ValueError(f"vocab_size {vocab_size} too small for byte fallback (needs >= 300)")
        if vocab_size < 8:
            raise ValueError(f"vocab_size must be at least 8, got {vocab_size}")
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size,
            model_type=model_type, normalization_rule_name=normalization, byte_fallback=byte_fallback,
            hard_vocab_limit=False, bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0,
            character_coverage=1.0, num_threads=1, minloglevel=2,
            input_sentence_size=2_000_000, shuffle_input_sentence=False,
        )
        cfg = TextTokenizerConfig(vocab_size=vocab_size, model_type=model_type,
                                  normalization=normalization, byte_fallback=byte_fallback)
        return cls(buf.getvalue(), cfg)

    # ------------------------------------------------------------------ use
    @property
    def vocab_size(self) -> int:
        return int(self._sp.GetPieceSize())

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; an empty/blank string gives ``[]`` (the unconditional prompt)."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        return list(self._sp.EncodeAsIds(text))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"text id {bad[0]} outside [0, {self.vocab_size})")
        return self._sp.DecodeIds(ids)

    def pieces(self, text: str) -> list[str]:
        return list(self._sp.EncodeAsPieces(text))

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / MODEL_NAME, self._proto)
        from kinema import __version__

        meta = {"kind": KIND, "kinema_version": __version__, "config": to_dict(self.cfg)}
        atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None) -> "TextTokenizer":
        """Load a saved tokenizer; no argument loads the embedded default."""
        directory = Path(directory) if directory is not None else default_component_dir(KIND)
        cfg = from_dict(TextTokenizerConfig, read_config_json(directory, kind=KIND))
        path = directory / MODEL_NAME
        if not path.is_file():
            raise CheckpointError(f"{directory} has no {MODEL_NAME}")
        tok = cls(path.read_bytes(), cfg)
        if tok.vocab_size != cfg.vocab_size:
            raise CheckpointError(f"{directory}: config says vocab_size {cfg.vocab_size}, "
                                  f"{MODEL_NAME} has {tok.vocab_size}")
        return tok
