"""Fréchet distance between generated and real synthetic-world clips in the feature space of a small
3D-conv video classifier trained here (a stand-in for FVD, Unterthiner et al., 2018, whose I3D
weights we cannot download; the distance itself is the FID formula of Heusel et al., 2017).

The classifier sees 16 frames at 64x64 and predicts what is in the clip: which object colours (8),
shapes (3) and motions (7) are present (multi-label, binary cross-entropy), the background (4) and
the object count (1-3) (cross-entropy). Every label can be read off the video itself, unlike "the
first object of the caption". It is trained on freshly rendered synthetic clips
(``scripts/train_video_classifier.py``); the pooled 128-d feature is what the distance compares.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from kinema.checkpoint import load_pretrained, save_pretrained
from kinema.data.synthetic import BACKGROUNDS, COLORS, MOTIONS, SHAPES

__all__ = ["ClassifierConfig", "VideoClassifier", "clip_input", "labels_of", "classifier_loss", "classifier_accuracy",
           "frechet_distance", "HEADS", "PRESENCE_HEADS", "CLASS_HEADS"]

KIND = "video_classifier"
PRESENCE_HEADS = {"shape": list(SHAPES), "color": list(COLORS), "motion": list(MOTIONS)}  # multi-label
CLASS_HEADS = {"background": list(BACKGROUNDS), "count": ["1", "2", "3"]}  # one class each
HEADS = {**PRESENCE_HEADS, **CLASS_HEADS}


@dataclass
class ClassifierConfig:
    frames: int = 16
    size: int = 64
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])


class VideoClassifier(nn.Module):
    """Four strided 3D conv blocks -> global average pool (the feature) -> one linear head per attribute."""

    def __init__(self, cfg: ClassifierConfig | None = None):
        super().__init__()
        self.cfg = cfg or ClassifierConfig()
        layers, cin = [], 3
        for i, c in enumerate(self.cfg.channels):
            stride = (1 if i == 0 else 2, 2, 2)
            layers += [nn.Conv3d(cin, c, 3, stride, 1), nn.GroupNorm(4, c), nn.SiLU()]
            cin = c
        self.body = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({k: nn.Linear(cin, len(v)) for k, v in HEADS.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: float (B, 3, T, H, W) in [-1, 1] -> (B, D)."""
        return self.body(x).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {k: h(f) for k, h in self.heads.items()}

    def save_pretrained(self, directory: str | Path) -> Path:
        return save_pretrained(directory, KIND, self.cfg, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "VideoClassifier":
        cfg, state = load_pretrained(directory, ClassifierConfig, KIND)
        m = cls(cfg)
        m.load_state_dict(state)
        return m.eval()


def clip_input(frames: torch.Tensor, cfg: ClassifierConfig) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, frames, size, size) in [-1, 1] (first frames, resized; short clips repeat the last)."""
    x = frames[: cfg.frames].permute(3, 0, 1, 2).float() / 127.5 - 1.0  # (3, T, H, W)
    if x.shape[1] < cfg.frames:
        x = torch.cat([x, x[:, -1:].expand(-1, cfg.frames - x.shape[1], -1, -1)], 1)
    return F.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False, antialias=True)


def labels_of(scene) -> dict[str, torch.Tensor]:
    """Targets of one scene: presence vectors (float 0/1) for PRESENCE_HEADS, class indices for CLASS_HEADS."""
    out = {k: torch.tensor([float(any(getattr(o, k) == v for o in scene.objects)) for v in vals])
           for k, vals in PRESENCE_HEADS.items()}
    out["background"] = torch.tensor(CLASS_HEADS["background"].index(scene.background))
    out["count"] = torch.tensor(CLASS_HEADS["count"].index(str(len(scene.objects))))
    return out


def classifier_loss(out: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over heads: binary cross-entropy for presence heads, cross-entropy for class heads."""
    return (sum(F.binary_cross_entropy_with_logits(out[k].float(), target[k]) for k in PRESENCE_HEADS)
            + sum(F.cross_entropy(out[k].float(), target[k]) for k in CLASS_HEADS))


def classifier_accuracy(out: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per head: the fraction of clips whose whole presence set (or class) is right."""
    acc = {k: float(((out[k] > 0).float() == target[k]).all(-1).float().mean()) for k in PRESENCE_HEADS}
    acc.update({k: float((out[k].argmax(-1) == target[k]).float().mean()) for k in CLASS_HEADS})
    return acc


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) of two feature sets (N, D).

    Tr (S_a S_b)^1/2 is computed as the sum of square roots of the eigenvalues of the symmetric PSD
    matrix S_a^1/2 S_b S_a^1/2 (same spectrum as S_a S_b), so covariances of fewer clips than
    feature dimensions (singular) need no general matrix square root."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(w.clip(min=0))) @ v.T
    tr_covmean = np.sqrt(np.linalg.eigvalsh(root1 @ s2 @ root1).clip(min=0)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)
