"""The sentencepiece text tokenizer: training, round trips, persistence, the embedded default."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kinema.errors import CheckpointError
from kinema.paths import default_component_dir
from kinema.tokenizers import TextTokenizer
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]


def _captions(n: int = 400) -> list[str]:
    return load_script("train_text_tokenizer").template_captions(n, seed=1)


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train(_captions(), vocab_size=400)


def test_round_trip_and_words(tok: TextTokenizer) -> None:
    assert 300 <= tok.vocab_size <= 400
    for text in ["a red circle bouncing on a black background", "a tiny purple star resting"]:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    # frequent caption words become single pieces: far fewer ids than characters
    text = "a large green square falling under gravity on a white background"
    assert len(tok.encode(text)) < len(text) // 3


def test_unseen_text_byte_fallback_and_case_folding(tok: TextTokenizer) -> None:
    text = "zebra ünïcode 日本 42!"
    assert tok.decode(tok.encode(text)) == text  # no <unk>: unseen chars become byte pieces
    assert tok.encode("A RED Circle") == tok.encode("a red circle")
    assert tok.encode("") == [] and tok.encode("   ") == []


def test_save_load_identical(tok: TextTokenizer, tmp_path: Path) -> None:
    tok.save_pretrained(tmp_path / "tt")
    meta = json.loads((tmp_path / "tt" / "config.json").read_text())
    assert meta["kind"] == "text_tokenizer" and meta["config"]["vocab_size"] == tok.vocab_size
    back = TextTokenizer.from_pretrained(tmp_path / "tt")
    assert back.vocab_size == tok.vocab_size
    for c in _captions(50):
        assert back.encode(c) == tok.encode(c)


def test_training_is_deterministic() -> None:
    caps = _captions(200)
    a = TextTokenizer.train(caps, vocab_size=320)
    b = TextTokenizer.train(caps, vocab_size=320)
    assert [a.encode(c) for c in caps[:20]] == [b.encode(c) for c in caps[:20]]


def test_embedded_default() -> None:
    assert (default_component_dir("text_tokenizer") / "spm.model").is_file()
    tok = TextTokenizer.from_pretrained()
    assert tok.vocab_size == 512
    text = "a small blue circle bouncing on a black background"
    assert tok.decode(tok.encode(text)) == text
    from kinema.data.synthetic import sample_scene

    caps = [sample_scene(90_000 + i).caption for i in range(50)]  # scenes the tokenizer never saw
    for c in caps:
        ids = tok.encode(c)
        assert tok.decode(ids) == c
        assert len(ids) <= len(c.split()) + 2 <= 64  # about one token per word, inside the LM budget


def test_bad_input(tok: TextTokenizer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no captions"):
        TextTokenizer.train(["", "  "])
    with pytest.raises(ValueError, match="byte fallback"):
        TextTokenizer.train(["a b c"], vocab_size=100)
    with pytest.raises(ValueError, match="outside"):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError, match="must be a str"):
        tok.encode(None)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError):
        TextTokenizer.from_pretrained(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    TextTokenizer.train(_captions(100), vocab_size=320).save_pretrained(tmp_path / "bad")
    (tmp_path / "bad" / "spm.model").write_bytes(b"not a model")
    with pytest.raises(CheckpointError):
        TextTokenizer.from_pretrained(tmp_path / "bad")
