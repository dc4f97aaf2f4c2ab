"""VideoTokenizer: a MAGVIT-v2-style causal 3D CNN with lookup-free quantization.

After MAGVIT-v2 (Yu et al., "Language Model Beats Diffusion -- Tokenizer is Key to Visual
Generation", arXiv 2310.05737): a causal 3D convolutional encoder compresses a clip of 1+4k frames
by 4x in time (after the first frame, which is coded on its own, so an image is a one-frame video)
and 8x (or 16x) in space; each latent vector of ``b`` channels is quantised by the sign of each
channel (lookup-free quantization, LFQ), giving an integer code in [0, 2^b) with no codebook
lookup. The decoder mirrors the encoder with depth-to-space up-sampling.

    vt = VideoTokenizer.from_pretrained()
    codes = vt.encode(x)      # x float (B, 3, T, H, W) in [-1, 1], T = 1 + 4k -> long (B, t, h, w)
    x_hat = vt.decode(codes)  # float (B, 3, T, H, W)

Frame counts that are not 1+4k are rejected (ValueError) rather than padded silently: padding would
change what the last tokens mean; callers pad explicitly with :func:`pad_frames`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from vector_quantize_pytorch import LFQ

from kinema.checkpoint import load_pretrained, load_state_strict, save_pretrained, weights_fingerprint
from kinema.paths import default_component_dir
from kinema.tokenizers.video_blocks import Decoder, Encoder

KIND = "video_tokenizer"


@dataclass
class VideoTokenizerConfig:
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 4)  # one spatial 2x per stage: 3 stages = 8x (times patch_size)
    temporal_downs: tuple[bool, ...] = (False, True, True)  # two temporal 2x = 4x
    num_res_blocks: int = 1
    patch_size: int = 1  # space-to-depth before the first conv (x patch_size more spatial compression)
    codebook_bits: int = 10  # codebook size 2**bits (2^10 .. 2^18)
    entropy_loss_weight: float = 0.1
    commitment_loss_weight: float = 0.25
    diversity_gamma: float = 1.0
    context_latents: int = 20  # past latent frames re-run at chunk boundaries (>= the causal receptive field)
    local_encoder: bool = False  # channel norm + replicated borders: each token sees only its receptive field
    extra: dict = field(default_factory=dict)

    @staticmethod
    def preset(name: str) -> "VideoTokenizerConfig":
        presets = {
            "tiny": VideoTokenizerConfig(base_channels=8, channel_mults=(1, 2, 2), codebook_bits=8),
            "small": VideoTokenizerConfig(base_channels=32, channel_mults=(1, 2), temporal_downs=(True, True),
                                          patch_size=2, codebook_bits=10),
            "base": VideoTokenizerConfig(base_channels=64, channel_mults=(1, 2, 4), num_res_blocks=2, codebook_bits=14),
            "base16x": VideoTokenizerConfig(base_channels=64, channel_mults=(1, 2, 4, 4),
                                            temporal_downs=(False, False, True, True), num_res_blocks=2,
                                            codebook_bits=18),
        }
        if name not in presets:
            raise ValueError(f"unknown video tokenizer preset {name!r}; choose from {', '.join(presets)}")
        return presets[name]


def codes_to_signs(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer LFQ codes (B, *grid) -> their bits as {-1, +1} channels (B, bits, *grid), the first
    channel the highest bit: the quantised latents the codes stand for."""
    weights = 2 ** torch.arange(bits - 1, -1, -1, device=codes.device)
    b = (codes.unsqueeze(1) // weights.view(1, -1, *[1] * (codes.dim() - 1))) % 2
    return b.float() * 2 - 1


def pad_frames(x: torch.Tensor) -> torch.Tensor:
    """Repeat the last frame so T becomes 1 + 4k (the next valid length)."""
    T = x.shape[2]
    target = 1 + 4 * math.ceil(max(0, T - 1) / 4)
    if target == T:
        return x
    return torch.cat([x, x[:, :, -1:].expand(-1, -1, target - T, -1, -1)], dim=2)


class VideoTokenizer(nn.Module):
    def __init__(self, cfg: VideoTokenizerConfig | None = None):
        super().__init__()
        cfg = cfg or VideoTokenizerConfig()
        if not 1 <= cfg.codebook_bits <= 18:
            raise ValueError(f"codebook_bits must be in 1..18, got {cfg.codebook_bits}")
        if len(cfg.channel_mults) != len(cfg.temporal_downs):
            raise ValueError("channel_mults and temporal_downs must have the same length")
        self.cfg = cfg
        b = cfg.codebook_bits
        self.encoder = Encoder(cfg.base_channels, cfg.channel_mults, cfg.temporal_downs, b, cfg.num_res_blocks, cfg.patch_size,
                               cfg.local_encoder)
        self.decoder = Decoder(cfg.base_channels, cfg.channel_mults, cfg.temporal_downs, b, cfg.num_res_blocks, cfg.patch_size)
        self.quantizer = LFQ(dim=b, codebook_size=2**b, entropy_loss_weight=cfg.entropy_loss_weight,
                             commitment_loss_weight=cfg.commitment_loss_weight, diversity_gamma=cfg.diversity_gamma,
                             channel_first=True)
        self.register_buffer("bit_weights", 2 ** torch.arange(b - 1, -1, -1), persistent=False)

    def code_fingerprint(self) -> str:
        """Hash of the encoder and quantizer: equal fingerprints give equal codes (kinema.checkpoint)."""
        return weights_fingerprint(self, ("encoder.", "quantizer."))

    # ------------------------------------------------------------------ shapes
    @property
    def codebook_size(self) -> int:
        return 2**self.cfg.codebook_bits

    @property
    def latent_channels(self) -> int:
        return self.cfg.codebook_bits

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.cfg.temporal_downs)

    @property
    def spatial_factor(self) -> int:
        return self.cfg.patch_size * 2 ** len(self.cfg.channel_mults)

    def token_grid(self, T: int, H: int, W: int) -> tuple[int, int, int]:
        self._check_dims(T, H, W)
        return 1 + (T - 1) // self.temporal_factor, H // self.spatial_factor, W // self.spatial_factor

    def num_frames(self, t: int) -> int:
        return 1 + self.temporal_factor * (t - 1)

    def _check_dims(self, T: int, H: int, W: int) -> None:
        f, s = self.temporal_factor, self.spatial_factor
        if T < 1 or (T - 1) % f:
            raise ValueError(f"frame count must be 1 + {f}k (1, {1 + f}, {1 + 2 * f}, ...), got {T}; "
                             "pad with kinema.tokenizers.video.pad_frames")
        if H % s or W % s or H <= 0 or W <= 0:
            raise ValueError(f"height and width must be positive multiples of {s}, got {H}x{W}")

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected video float (B, 3, T, H, W) in [-1, 1], got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"expected a float tensor in [-1, 1], got {x.dtype} (convert uint8 with x / 127.5 - 1)")
        if x.numel() and (x.min() < -1.01 or x.max() > 1.01):
            raise ValueError(f"video values must lie in [-1, 1], got [{x.min():.3f}, {x.max():.3f}]")
        self._check_dims(*x.shape[2:])

    # ------------------------------------------------------------------ training forward
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, codes, LFQ aux loss) — the training path."""
        z = self.encoder(x)
        q, codes, aux = self.quantizer(z.float())
        return self.decoder(q), codes, aux

    # ------------------------------------------------------------------ inference
    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous pre-quantisation latents (B, C, t, h, w) (the DiT path models these)."""
        self._check_input(x)
        with torch.no_grad():
            return self.encoder(x.float())

    def latents_to_codes(self, z: torch.Tensor) -> torch.Tensor:
        bits = (z > 0).long()  # (B, C, t, h, w); LFQ's sign quantisation, first channel = highest bit
        return torch.einsum("bcthw,c->bthw", bits, self.bit_weights.to(z.device))

    def codes_to_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantised latents (B, C, t, h, w) in {-1, +1} for integer codes (B, t, h, w)."""
        self._check_codes(codes)
        return codes_to_signs(codes, self.bit_weights.numel())

    def _check_codes(self, codes: torch.Tensor) -> None:
        if not isinstance(codes, torch.Tensor) or codes.ndim != 4 or codes.is_floating_point():
            raise ValueError(f"codes must be an integer tensor (B, t, h, w), got "
                             f"{tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got [{int(codes.min())}, {int(codes.max())}]")

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.latents_to_codes(self.encode_latents(x))

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z.float()).clamp(-1, 1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decode_latents(self.codes_to_latents(codes))

    # ------------------------------------------------------------------ chunked (bounded memory)
    @torch.no_grad()
    def encode_chunked(self, x: torch.Tensor, chunk_latents: int = 4) -> torch.Tensor:
        """encode() of a long clip, ``chunk_latents`` latent frames at a time, equal to whole-clip codes.

        Each chunk re-encodes ``context_latents`` latent frames of past context (the encoder is
        causal with a finite receptive field), so memory is bounded by the chunk, not the clip.
        """
        self._check_input(x)
        f, ctx = self.temporal_factor, self.cfg.context_latents
        t_total = self.token_grid(*x.shape[2:])[0]
        out = [self.encode(x[:, :, : 1 + f * (min(chunk_latents, t_total) - 1)])]
        j = out[0].shape[1]
        while j < t_total:
            j1 = min(t_total, j + chunk_latents)
            m = max(0, j - ctx - 1)  # chunk input starts at global frame f*m (its own "first frame")
            codes = self.encode(x[:, :, f * m : f * (j1 - 1) + 1])
            out.append(codes[:, j - m :])
            j = j1
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def decode_chunked(self, codes: torch.Tensor, chunk_latents: int = 4) -> torch.Tensor:
        """decode() chunk by chunk with ``context_latents`` of past context; equal to whole decode."""
        self._check_codes(codes)
        f, ctx = self.temporal_factor, self.cfg.context_latents
        t_total = codes.shape[1]
        out = [self.decode(codes[:, : min(chunk_latents, t_total)])]
        j = min(chunk_latents, t_total)
        while j < t_total:
            j1 = min(t_total, j + chunk_latents)
            m = max(0, j - ctx - 1)
            frames = self.decode(codes[:, m:j1])  # local latent 0 -> 1 frame, others -> f frames
            out.append(frames[:, :, 1 + f * (j - m - 1) :])
            j = j1
        return torch.cat(out, dim=2)

    # ------------------------------------------------------------------ files
    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        return save_pretrained(directory, KIND, self.cfg, self.state_dict(), dtype=dtype)

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None) -> "VideoTokenizer":
        directory = Path(directory) if directory is not None else default_component_dir(KIND)
        cfg, state = load_pretrained(directory, VideoTokenizerConfig, KIND)
        model = cls(cfg)
        load_state_strict(model, state, str(directory))
        return model.eval()
