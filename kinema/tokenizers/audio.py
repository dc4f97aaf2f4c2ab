"""AudioCodec: a SoundStream-style streaming neural audio codec with residual VQ.

After SoundStream (Zeghidour et al., "SoundStream: An End-to-End Neural Audio Codec", arXiv
2107.03312): a causal convolutional encoder turns 16 kHz mono audio into 50 latent frames/s, a
residual vector quantizer (vector-quantize-pytorch ``ResidualVQ``) trained with *quantizer
dropout* turns each frame into ``Q`` codebook indices (coarse levels first), and a causal
convolutional decoder turns the summed code vectors back into a waveform. Because of quantizer
dropout one model serves several bitrates: ``kbps = Q * log2(codebook_size) * frame_rate / 1000``.

    ac = AudioCodec.from_pretrained()                 # the embedded default
    wav = ac.prepare(audio, sample_rate)              # (1, 1, N): mono, ac.sample_rate, finite
    codes = ac.encode(wav, kbps=1.5)                  # long (B, Q, n), n = ceil(N / hop)
    wav_hat = ac.decode(codes)                        # (B, 1, n * hop); any Q <= num_quantizers

Multichannel input to :meth:`prepare` is downmixed to mono by averaging the channels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import ResidualVQ

from kinema.checkpoint import load_pretrained, load_state_strict, save_pretrained, weights_fingerprint
from kinema.precision import bf16_is_fast
from kinema.tokenizers.audio_blocks import Decoder, Encoder, State

KIND = "audio_codec"
EMA_STATS = (".embed_avg", ".cluster_size")  # training-only codebook statistics


def autocast_if(enabled: bool, device: torch.device):
    """bf16 autocast (never fp16 on CPU) when ``enabled`` and the device has native bf16 (kinema.precision)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and bf16_is_fast(device))


@dataclass
class AudioCodecConfig:
    sample_rate: int = 16000
    channels: int = 16  # base width; block i has channels * mults[i]
    mults: tuple[int, ...] = (1, 2, 4, 8, 16)  # len(strides) + 1
    strides: tuple[int, ...] = (2, 4, 5, 8)  # product = hop length
    dilations: tuple[int, ...] = (1, 3, 9)
    latent_dim: int = 64
    num_quantizers: int = 12
    codebook_size: int = 1024
    quantize_dropout: bool = True
    commitment_weight: float = 1.0
    ema_decay: float = 0.99
    # EMA usage below which a code is re-seeded from the batch; keep it well under
    # (frames per batch) / codebook_size or codes churn every step
    dead_code_threshold: float = 0.02
    kmeans_init: bool = True
    bf16_inference: bool = True  # encode/decode under bf16 autocast where bf16 is native (~3x faster); quantizer fp32

    @staticmethod
    def preset(name: str) -> "AudioCodecConfig":
        """Named sizes: ``tiny`` (tests, hop 80), ``small`` (the embedded default)."""
        if name == "small":
            return AudioCodecConfig()
        if name == "tiny":
            return AudioCodecConfig(
                channels=8, mults=(1, 2, 4), strides=(4, 5), dilations=(1, 3), latent_dim=16,
                num_quantizers=4, codebook_size=64, kmeans_init=False, ema_decay=0.95, dead_code_threshold=2.0,
            )
        raise ValueError(f"unknown audio codec preset {name!r}; known: tiny, small")


@dataclass
class CodecOutput:
    """What :meth:`AudioCodec.forward` returns for training."""

    wav: torch.Tensor  # (B, 1, N) reconstruction
    codes: torch.Tensor  # (B, Q, n)
    commit_loss: torch.Tensor  # scalar
    extras: dict = field(default_factory=dict)


class AudioCodec(nn.Module):
    """SoundStream-style codec: causal conv encoder, residual VQ with quantizer dropout, causal decoder."""

    def __init__(self, cfg: AudioCodecConfig | None = None):
        super().__init__()
        cfg = cfg or AudioCodecConfig()
        if len(cfg.mults) != len(cfg.strides) + 1:
            raise ValueError(f"mults needs len(strides)+1={len(cfg.strides) + 1} entries, got {len(cfg.mults)}")
        self.cfg = cfg
        self.encoder = Encoder(cfg.channels, cfg.latent_dim, cfg.strides, cfg.mults, cfg.dilations)
        self.decoder = Decoder(cfg.channels, cfg.latent_dim, cfg.strides, cfg.mults, cfg.dilations)
        self.rvq = ResidualVQ(
            dim=cfg.latent_dim,
            num_quantizers=cfg.num_quantizers,
            codebook_size=cfg.codebook_size,
            quantize_dropout=cfg.quantize_dropout,
            commitment_weight=cfg.commitment_weight,
            decay=cfg.ema_decay,
            threshold_ema_dead_code=cfg.dead_code_threshold,
            kmeans_init=cfg.kmeans_init,
            kmeans_iters=10,
        )

    # ------------------------------------------------------------------ properties
    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def hop_length(self) -> int:
        return math.prod(self.cfg.strides)

    @property
    def frame_rate(self) -> float:
        return self.cfg.sample_rate / self.hop_length

    @property
    def num_quantizers(self) -> int:
        return self.cfg.num_quantizers

    def code_fingerprint(self) -> str:
        """Hash of the encoder and codebooks: equal fingerprints give equal codes (kinema.checkpoint)."""
        return weights_fingerprint(self, ("encoder.", "rvq."), skip_suffixes=EMA_STATS)

    @property
    def codebook_size(self) -> int:
        return self.cfg.codebook_size

    def kbps_for_quantizers(self, q: int) -> float:
        return q * math.log2(self.codebook_size) * self.frame_rate / 1000.0

    @property
    def supported_kbps(self) -> list[float]:
        """Bitrate of every usable number of quantizers (1 .. num_quantizers)."""
        return [round(self.kbps_for_quantizers(q), 4) for q in range(1, self.num_quantizers + 1)]

    def quantizers_for_kbps(self, kbps: float | None) -> int:
        """Largest Q whose bitrate does not exceed ``kbps`` (None: all quantizers)."""
        if kbps is None:
            return self.num_quantizers
        if not isinstance(kbps, (int, float)) or not math.isfinite(kbps) or kbps <= 0:
            raise ValueError(f"kbps must be a positive number, got {kbps!r}")
        q = int(math.floor(kbps / self.kbps_for_quantizers(1) + 1e-6))
        if q < 1:
            raise ValueError(f"{kbps} kbps is below the lowest bitrate {self.supported_kbps[0]} kbps")
        return min(q, self.num_quantizers)

    # ------------------------------------------------------------------ input handling
    def prepare(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Any audio (N,), (C, N) or (1, C, N) -> float (1, 1, N') mono at ``self.sample_rate``.

        Multichannel audio is downmixed by averaging channels; other rates are resampled with
        torchaudio; NaN/inf raises ValueError. Empty audio gives (1, 1, 0).
        """
        if not isinstance(wav, torch.Tensor):
            raise ValueError(f"audio must be a torch.Tensor, got {type(wav).__name__}")
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
        if wav.dim() == 3:
            if wav.shape[0] != 1:
                raise ValueError(f"prepare takes one clip; got a batch of {wav.shape[0]}")
            wav = wav[0]
        if wav.dim() == 1:
            wav = wav[None]
        if wav.dim() != 2:
            raise ValueError(f"audio must be (N,), (C, N) or (1, C, N), got shape {tuple(wav.shape)}")
        wav = wav.float()
        if not torch.isfinite(wav).all():
            raise ValueError("audio contains NaN or infinite samples")
        wav = wav.mean(dim=0, keepdim=True)  # (1, N) downmix
        if sample_rate != self.sample_rate and wav.shape[-1] > 0:
            import torchaudio.functional as AF

            wav = AF.resample(wav, sample_rate, self.sample_rate)
        return wav[None]  # (1, 1, N)

    def _check_wav(self, wav: torch.Tensor) -> torch.Tensor:
        if not isinstance(wav, torch.Tensor) or wav.dim() != 3 or wav.shape[1] != 1:
            shape = tuple(wav.shape) if isinstance(wav, torch.Tensor) else type(wav).__name__
            raise ValueError(f"expected a waveform (B, 1, N) at {self.sample_rate} Hz, got {shape}; see AudioCodec.prepare")
        if not torch.isfinite(wav).all():
            raise ValueError("audio contains NaN or infinite samples")
        return wav.float()

    def _pad_to_hop(self, wav: torch.Tensor) -> torch.Tensor:
        n = -(-wav.shape[-1] // self.hop_length)
        return F.pad(wav, (0, n * self.hop_length - wav.shape[-1]))

    # ------------------------------------------------------------------ codes <-> latents
    def _quantize_indices(self, z: torch.Tensor, q: int) -> torch.Tensor:
        # z: (B, D, n) -> (B, q, n) greedy residual indices of the first q levels
        x = z.transpose(1, 2).float()  # (B, n, D)
        residual = x
        out = []
        with torch.autocast(device_type=z.device.type, enabled=False):  # distances in fp32
            for layer in self.rvq.layers[:q]:
                cb = layer._codebook.embed[0].float()  # (K, D)
                d = residual.pow(2).sum(-1, keepdim=True) - 2 * residual @ cb.t() + cb.pow(2).sum(-1)  # (B, n, K)
                idx = d.argmin(-1)  # (B, n)
                residual = residual - cb[idx]
                out.append(idx)
        return torch.stack(out, dim=1) if out else x.new_zeros(x.shape[0], 0, x.shape[1], dtype=torch.long)

    def codes_to_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, Q, n) indices -> (B, D, n) summed code vectors."""
        lat = 0.0
        for i in range(codes.shape[1]):
            cb = self.rvq.layers[i]._codebook.embed[0]  # (K, D)
            lat = lat + cb[codes[:, i]]  # (B, n, D)
        return lat.transpose(1, 2)

    def _check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3:
            raise ValueError(f"codes must be a (B, Q, n) integer tensor, got {getattr(codes, 'shape', codes)!r}")
        if codes.is_floating_point():
            raise ValueError("codes must be integers")
        if not 1 <= codes.shape[1] <= self.num_quantizers:
            raise ValueError(f"codes have {codes.shape[1]} levels; this codec has 1..{self.num_quantizers}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"code values must lie in [0, {self.codebook_size})")
        return codes.long()

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def encode(self, wav: torch.Tensor, kbps: float | None = 6.0, state: State | None = None) -> torch.Tensor:
        """float (B, 1, N) at ``sample_rate`` -> long (B, Q, ceil(N / hop)); Q from ``kbps``."""
        wav = self._pad_to_hop(self._check_wav(wav))
        q = self.quantizers_for_kbps(kbps)
        if wav.shape[-1] == 0:
            return torch.zeros(wav.shape[0], q, 0, dtype=torch.long)
        with autocast_if(self.cfg.bf16_inference, wav.device):
            z = self.encoder(wav, state)  # (B, D, n)
        return self._quantize_indices(z.float(), q)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """long (B, Q, n) -> float (B, 1, n * hop); fewer levels than num_quantizers is fine."""
        codes = self._check_codes(codes)
        if codes.shape[-1] == 0:
            return torch.zeros(codes.shape[0], 1, 0)
        lat = self.codes_to_latent(codes.to(self.rvq.layers[0]._codebook.embed.device))
        with autocast_if(self.cfg.bf16_inference, lat.device):
            return self.decoder(lat, state).float()

    def encode_stream(self, chunks: Iterable[torch.Tensor] | torch.Tensor, kbps: float | None = 6.0, chunk_frames: int = 50) -> Iterator[torch.Tensor]:
        """Encode chunk by chunk with carried conv state; yields (B, Q, k) codes per chunk.

        ``chunks``: an iterable of (B, 1, N_i) pieces of any length, or one long (B, 1, N) tensor
        split into ``chunk_frames * hop`` samples. Leftover samples wait for the next piece; the
        last partial frame is zero padded. Concatenated output equals :meth:`encode` of the whole.
        """
        if isinstance(chunks, torch.Tensor):
            wav = self._check_wav(chunks)
            step = max(1, int(chunk_frames)) * self.hop_length
            chunks = (wav[..., i : i + step] for i in range(0, wav.shape[-1], step))
        state: State = {}
        pending: torch.Tensor | None = None
        for chunk in chunks:
            chunk = self._check_wav(chunk)
            pending = chunk if pending is None else torch.cat([pending, chunk], dim=-1)
            n = pending.shape[-1] // self.hop_length * self.hop_length
            if n:
                yield self.encode(pending[..., :n], kbps, state)
                pending = pending[..., n:]
        if pending is not None and pending.shape[-1]:
            yield self.encode(pending, kbps, state)

    def decode_stream(self, codes: Iterable[torch.Tensor] | torch.Tensor, chunk_frames: int = 50) -> Iterator[torch.Tensor]:
        """Decode chunk by chunk with carried conv state; yields (B, 1, k * hop) per chunk.

        Memory is bounded by the chunk size, so a 60 s stream decodes in constant memory;
        concatenated output equals :meth:`decode` of all codes at once.
        """
        if isinstance(codes, torch.Tensor):
            c = self._check_codes(codes)
            step = max(1, int(chunk_frames))
            codes = (c[..., i : i + step] for i in range(0, c.shape[-1], step))
        state: State = {}
        for chunk in codes:
            if chunk.shape[-1]:
                yield self.decode(chunk, state)

    def forward(self, wav: torch.Tensor) -> CodecOutput:
        """Training pass: (B, 1, N) with N a multiple of hop -> reconstruction, codes, commitment loss.

        In training mode the RVQ applies quantizer dropout (a random number of levels per batch)
        and updates its codebooks by EMA; run it outside autocast (fp32).
        """
        z = self.encoder(wav)  # (B, D, n)
        with torch.autocast(device_type=wav.device.type, enabled=False):
            zq, idx, commit = self.rvq(z.transpose(1, 2).float())  # (B, n, D), (B, n, Q), (Q,) or scalar
        wav_hat = self.decoder(zq.transpose(1, 2))
        return CodecOutput(wav=wav_hat, codes=idx.transpose(1, 2), commit_loss=commit.sum())

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = torch.bfloat16) -> Path:
        """config.json + model.safetensors (bf16 by default to keep the shipped file small).

        The codebooks' EMA statistics (``embed_avg``, ``cluster_size``) are training-only state and
        are not written; :meth:`from_pretrained` restarts them from the codebook itself. Training
        checkpoints keep them.
        """
        state = {k: v for k, v in self.state_dict().items() if not k.endswith(EMA_STATS)}
        return save_pretrained(directory, KIND, self.cfg, state, dtype=dtype)

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None) -> "AudioCodec":
        """Load a directory written by :meth:`save_pretrained`; no argument: the embedded default."""
        if directory is None:
            from kinema.paths import default_component_dir

            directory = default_component_dir(KIND)
        cfg, state = load_pretrained(directory, AudioCodecConfig, KIND)
        model = cls(cfg)
        # buffers such as the RVQ's "initted" flags are bools/ints; restore their dtypes
        ref = model.state_dict()
        state = {k: v.to(ref[k].dtype) if k in ref else v for k, v in state.items()}
        for k in ref:  # codebook EMA statistics, not shipped: embed_avg / cluster_size == embed again
            if k.endswith(".cluster_size") and k not in state:
                state[k] = torch.ones_like(ref[k])
            elif k.endswith(".embed_avg") and k not in state:
                state[k] = state[k[: -len("embed_avg")] + "embed"].to(ref[k].dtype).clone()
        load_state_strict(model, state, str(directory))
        return model.eval()
