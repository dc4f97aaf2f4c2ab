"""A small contrastive caption <-> first-frame scorer in token space, for best-of-K reranking.

CLIP (Radford et al., 2021, arXiv:2103.00020) trains an image encoder and a text encoder so that
matching pairs have the highest cosine similarity in a batch; DALL-E (Ramesh et al., 2021,
arXiv:2102.12092) then draws many samples and keeps the ones CLIP ranks best for the caption. This
module is that scorer, shrunk to kinema's scale and moved into token space: the image side reads the
video tokenizer's codes of one latent frame (h, w) directly, so candidates are scored before any
pixel is decoded; the text side reads the text tokenizer's ids.

- image: each code's lookup-free-quantisation bits (+-1, ``code_bits`` of them) -> 1x1 conv ->
  a few 3x3 conv blocks -> mean and max pool -> projection;
- text: embeddings + learned positions -> a small transformer encoder (the binding of colour to
  shape needs word order) -> mean pool -> projection;
- both projections are L2-normalised; ``score`` is their cosine similarity times a learned scale.

It is trained by ``scripts/train_caption_scorer.py`` on the training clips' token shards only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from kinema.checkpoint import load_pretrained, load_state_strict, save_pretrained
from kinema.tokenizers.video import codes_to_signs

__all__ = ["ScorerConfig", "CaptionScorer"]

KIND = "caption_scorer"


@dataclass
class ScorerConfig:
    code_bits: int = 10        # bits per video code (codebook 2**code_bits)
    text_vocab: int = 512      # text tokenizer ids
    max_text: int = 48         # text ids kept per caption
    width: int = 64            # image channels and text width
    image_blocks: int = 3
    text_layers: int = 2
    heads: int = 4
    dim: int = 64              # joint embedding size


class _ConvBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, c)
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(F.gelu(self.norm(x)))))


class CaptionScorer(nn.Module):
    def __init__(self, cfg: ScorerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ScorerConfig()
        c = cfg.width
        self.stem = nn.Conv2d(cfg.code_bits, c, 1)
        self.blocks = nn.Sequential(*[_ConvBlock(c) for _ in range(cfg.image_blocks)])
        self.image_proj = nn.Linear(2 * c, cfg.dim)
        self.tok = nn.Embedding(cfg.text_vocab + 1, c, padding_idx=cfg.text_vocab)  # last id = padding
        self.pos = nn.Parameter(torch.zeros(cfg.max_text, c))
        layer = nn.TransformerEncoderLayer(c, cfg.heads, 4 * c, dropout=0.0, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.text = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)
        self.text_proj = nn.Linear(c, cfg.dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.66))  # exp -> ~14, CLIP's starting temperature

    # ------------------------------------------------------------------ encoders
    def encode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) long in [0, 2**code_bits) -> unit vectors (B, dim)."""
        if codes.dim() != 3:
            raise ValueError(f"codes must be (B, h, w), got shape {tuple(codes.shape)}")
        x = self.blocks(self.stem(codes_to_signs(codes, self.cfg.code_bits)))  # LFQ bits (B, bits, h, w)
        x = torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1)
        return F.normalize(self.image_proj(x), dim=-1)

    def text_batch(self, texts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Lists of text ids -> padded ids (B, L) and a padding mask (B, L) (True = padding)."""
        if not texts or any(len(t) == 0 for t in texts):
            raise ValueError("every caption needs at least one text id")
        L = min(self.cfg.max_text, max(len(t) for t in texts))
        ids = torch.full((len(texts), L), self.cfg.text_vocab, dtype=torch.long)
        for i, t in enumerate(texts):
            t = list(t)[:L]
            if min(t) < 0 or max(t) >= self.cfg.text_vocab:
                raise ValueError(f"text ids must be in [0, {self.cfg.text_vocab})")
            ids[i, :len(t)] = torch.tensor(t)
        ids = ids.to(self.pos.device)
        return ids, ids == self.cfg.text_vocab

    def encode_text(self, texts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Captions as text ids -> unit vectors (B, dim)."""
        ids, pad = self.text_batch(texts)
        x = self.text(self.tok(ids) + self.pos[: ids.shape[1]], src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return F.normalize(self.text_proj((x * keep).sum(1) / keep.sum(1)), dim=-1)

    def forward(self, codes: torch.Tensor, texts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Logits (B, B) of every frame against every caption (row i's match is column i)."""
        return self.logit_scale.exp().clamp(max=100) * self.encode_codes(codes) @ self.encode_text(texts).T

    @torch.no_grad()
    def score(self, codes: torch.Tensor, text: Sequence[int]) -> torch.Tensor:
        """Cosine similarity (K,) of K candidate frames' codes (K, h, w) with one caption."""
        return (self.encode_codes(codes) @ self.encode_text([text]).T).squeeze(1)

    # ------------------------------------------------------------------ files
    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        return save_pretrained(directory, KIND, self.cfg, self.state_dict(), dtype=dtype)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "CaptionScorer":
        cfg, state = load_pretrained(directory, ScorerConfig, KIND)
        model = cls(cfg)
        load_state_strict(model, state, str(directory))
        return model.eval()
