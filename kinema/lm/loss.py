"""Fused output projection + cross-entropy, computed in row chunks.

Follows the fused linear cross-entropy of Liger-Kernel (Hsu et al., 2024, arXiv:2410.10989): the
(N, V) logits are never materialised at once. Each chunk of rows computes its logits, the loss and
the gradient of the logits right away (softmax - one-hot, in float32 while the chunk is hot in
cache), and turns that into gradients for the hidden states and the projection weight. Backward
then only scales the stored gradients. Same three matmuls as the plain path, a fraction of the
memory traffic; the loss is exact float32 log-softmax of the (bf16 under autocast) logits.

With per-row weights the loss is the weighted mean ``sum(w_i * ce_i) / sum(w_i)``, so a weight
vector of ones gives the plain mean (training uses this to weight the video tokens that change
between latent frames, ``kinema.lm.token_data``).
"""
from __future__ import annotations

import torch

__all__ = ["fused_linear_cross_entropy"]


class _FusedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
                compute_dtype: torch.dtype, row_weight: torch.Tensor | None) -> torch.Tensor:
        N = h.shape[0]
        if row_weight is not None:
            rw = row_weight.float()
            scale = rw / rw.sum()  # (N,) each row's share of the mean
        else:
            scale = None
        w = weight.to(compute_dtype)  # (V, C)
        hc = h.to(compute_dtype)  # (N, C)
        grad_h = torch.empty_like(hc)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        for s in range(0, N, chunk):
            x = hc[s:s + chunk]  # (n, C)
            t = targets[s:s + chunk]
            logits = (x @ w.t()).float()  # (n, V)
            lse = torch.logsumexp(logits, -1)  # (n,)
            ce = lse - logits.gather(1, t[:, None]).squeeze(1)  # (n,)
            loss += ce.sum() if scale is None else (ce * scale[s:s + chunk]).sum()
            if need_grad:
                g = (logits - lse[:, None]).exp_()  # softmax, (n, V)
                g.scatter_add_(1, t[:, None], torch.full_like(lse[:, None], -1.0))
                g = (g.div_(N) if scale is None else g.mul_(scale[s:s + chunk, None])).to(compute_dtype)
                grad_h[s:s + chunk] = g @ w
                grad_w.addmm_(g.t().float(), x.float()) if compute_dtype == torch.float32 else \
                    grad_w.add_((g.t() @ x).float())
        ctx.save_for_backward(grad_h, grad_w)
        ctx.h_dtype, ctx.w_dtype = h.dtype, weight.dtype
        return loss / N if scale is None else loss

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        gh = (grad_h.float() * grad_out).to(ctx.h_dtype) if ctx.needs_input_grad[0] else None
        gw = (grad_w * grad_out).to(ctx.w_dtype) if ctx.needs_input_grad[1] else None
        return gh, gw, None, None, None, None


def fused_linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               chunk: int = 256, row_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean CE of ``h @ weight.T`` (h: (N, C), weight: (V, C), targets: (N,)), bf16 under autocast;
    with ``row_weight`` (N,) non-negative, not all zero, the weighted mean."""
    if row_weight is not None:
        if row_weight.shape != targets.shape:
            raise ValueError(f"row_weight must be {tuple(targets.shape)}, got {tuple(row_weight.shape)}")
        if bool((row_weight < 0).any()) or not float(row_weight.sum()) > 0:
            raise ValueError("row_weight must be non-negative with a positive sum")
    dev = h.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype
    with torch.autocast(dev, enabled=False):
        return _FusedLinearCE.apply(h, weight, targets, chunk, dtype, row_weight)
