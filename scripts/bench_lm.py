"""Benchmark KinemaLM against Hugging Face LlamaForCausalLM of the same dimensions and weights.

Measured side by side in one run, random weights (copied from kinema into the HF model, and the
logits checked equal so both compute the same function):

* decode tokens/s: kinema ``generate`` (prefill + KV cache, greedy) vs HF ``generate`` (greedy,
  use_cache) at a ``--prefix``-token prompt + ``--new`` tokens, and kinema without a cache (a full
  forward per token, ``--nocache_new`` tokens) to show the cache works;
* training tokens/s: forward + backward + AdamW step, same optimizer settings, same batch;
* with ``--device cuda``: model FLOPs utilisation (MFU) of training against ``--peak_tflops``.

    OMP_NUM_THREADS=2 python scripts/bench_lm.py                 # CPU, bf16 autocast
    python scripts/bench_lm.py --device cuda --preset 300M --train_batch 8 --train_seq 2048

Prints progress, then ONE JSON line last.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kinema.decode.generate import generate  # noqa: E402
from kinema.lm.model import KinemaLM, LMConfig  # noqa: E402
from kinema.training import autocast  # noqa: E402


def hf_twin(model: KinemaLM):
    """An HF LlamaForCausalLM with kinema's weights (same math for text positions)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.cfg
    hc = LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.ffn_dim,
                     num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads,
                     max_position_embeddings=c.max_seq_len, rms_norm_eps=c.norm_eps, rope_theta=c.rope_theta,
                     tie_word_embeddings=c.tie_embeddings, attention_bias=False, mlp_bias=False,
                     bos_token_id=None, eos_token_id=None, pad_token_id=None)
    hf = LlamaForCausalLM._from_config(hc, attn_implementation="sdpa").to(model.device)
    H, Hk, D, F = c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim
    with torch.no_grad():
        hf.model.embed_tokens.weight.copy_(model.embed.weight)
        if not c.tie_embeddings:
            hf.lm_head.weight.copy_(model.head.weight)
        hf.model.norm.weight.copy_(model.norm.weight)
        for blk, layer in zip(model.blocks, hf.model.layers):
            q, k, v = blk.attn.qkv.weight.split([H * D, Hk * D, Hk * D])
            layer.self_attn.q_proj.weight.copy_(q)
            layer.self_attn.k_proj.weight.copy_(k)
            layer.self_attn.v_proj.weight.copy_(v)
            layer.self_attn.o_proj.weight.copy_(blk.attn.out.weight)
            g, u = blk.mlp.gate_up.weight.split([F, F])
            layer.mlp.gate_proj.weight.copy_(g)
            layer.mlp.up_proj.weight.copy_(u)
            layer.mlp.down_proj.weight.copy_(blk.mlp.down.weight)
            layer.input_layernorm.weight.copy_(blk.attn_norm.weight)
            layer.post_attention_layernorm.weight.copy_(blk.mlp_norm.weight)
    return hf.eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def interleaved(a, b, device, repeats: int) -> tuple[float, float]:
    """Best time of each over ``repeats`` alternating runs (a, b, a, b, ...): on a shared machine
    both see the same background load, and the minimum is the least disturbed run."""
    ta, tb = float("inf"), float("inf")
    for _ in range(repeats):
        ta = min(ta, timed(a, device))
        tb = min(tb, timed(b, device))
    return ta, tb


def bench_decode(model, hf, args, device) -> dict:
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, model.cfg.vocab_size, (args.batch, args.prefix), generator=g).to(device)
    bf16 = args.dtype == "bf16"

    def ours():
        with autocast(device, bf16):
            return generate(model, prompt, None, args.new, temperature=0)

    def theirs():
        with autocast(device, bf16):
            return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new,
                               min_new_tokens=args.new, do_sample=False, use_cache=True)

    def nocache():
        ids = prompt
        with autocast(device, bf16), torch.no_grad():
            for _ in range(args.nocache_new):
                nxt = model(ids).logits[:, -1].argmax(-1, keepdim=True)
                ids = torch.cat([ids, nxt], 1)
        return ids

    with torch.no_grad():
        a, b = ours(), theirs()[:, args.prefix:]  # warm-up + agreement check
    agree = float((a == b).float().mean())
    t_ours, t_hf = interleaved(ours, theirs, device, args.repeats)
    t_nc = timed(nocache, device, 1)
    n = args.batch * args.new
    return {"decode_tokens_per_s": n / t_ours, "hf_decode_tokens_per_s": n / t_hf,
            "nocache_decode_tokens_per_s": args.batch * args.nocache_new / t_nc,
            "decode_speedup_vs_hf": t_hf / t_ours, "decode_speedup_vs_nocache": (n / t_ours) / (args.batch * args.nocache_new / t_nc),
            "greedy_agreement_with_hf": agree}


def bench_train(model, hf, args, device) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.cfg.vocab_size, (args.train_batch, args.train_seq), generator=g).to(device)
    mask = torch.ones_like(ids, dtype=torch.bool)
    bf16 = args.dtype == "bf16"
    model.train()
    hf.train()
    opt_a = torch.optim.AdamW(model.parameters(), lr=1e-4)
    opt_b = torch.optim.AdamW(hf.parameters(), lr=1e-4)

    def step_ours():
        with autocast(device, bf16):
            loss = model(ids, loss_mask=mask).loss
        loss.backward()
        opt_a.step()
        opt_a.zero_grad(set_to_none=True)

    def step_hf():
        with autocast(device, bf16):
            loss = hf(input_ids=ids, labels=ids).loss
        loss.backward()
        opt_b.step()
        opt_b.zero_grad(set_to_none=True)

    with torch.no_grad(), autocast(device, bf16):  # same loss on the same weights (before any step)
        la, lb = float(model(ids, loss_mask=mask).loss), float(hf(input_ids=ids, labels=ids).loss)
    step_ours(), step_hf()  # warm-up
    t_ours, t_hf = interleaved(step_ours, step_hf, device, args.train_steps)
    tokens = ids.numel()
    out = {"train_tokens_per_s": tokens / t_ours, "hf_train_tokens_per_s": tokens / t_hf,
           "train_speedup_vs_hf": t_hf / t_ours, "initial_loss": la, "hf_initial_loss": lb}
    if device.type == "cuda":
        c = model.cfg
        flops_per_token = 6 * c.num_params(embeddings=False) + 6 * c.vocab_size * c.dim \
            + 12 * c.n_layers * c.dim * args.train_seq  # matmuls + attention (PaLM appendix B)
        out["mfu"] = flops_per_token * tokens / t_ours / (args.peak_tflops * 1e12)
        out["hf_mfu"] = flops_per_token * tokens / t_hf / (args.peak_tflops * 1e12)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prefix", type=int, default=1024)
    p.add_argument("--new", type=int, default=256)
    p.add_argument("--nocache_new", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train_batch", type=int, default=4)
    p.add_argument("--train_seq", type=int, default=512)
    p.add_argument("--train_steps", type=int, default=6)
    p.add_argument("--peak_tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100 SXM: 989)")
    p.add_argument("--skip_train", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = KinemaLM(LMConfig.preset(args.preset, vocab_size=args.vocab, max_seq_len=args.prefix + args.new)).to(device).eval()
    hf = hf_twin(model)
    with torch.no_grad():
        x = torch.randint(0, args.vocab, (1, 64), device=device)
        diff = float((model(x).logits - hf(x).logits).abs().max())
    c = model.cfg
    res = {"device": str(device), "dtype": args.dtype, "preset": args.preset, "dim": c.dim, "n_layers": c.n_layers,
           "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads, "ffn_dim": c.ffn_dim, "vocab_size": c.vocab_size,
           "params_m": c.num_params() / 1e6, "prefix": args.prefix, "new_tokens": args.new, "batch": args.batch,
           "threads": torch.get_num_threads(), "fp32_logit_max_diff_vs_hf": diff}
    print(f"same function as HF: max |logit diff| {diff:.2e}", file=sys.stderr)
    res.update(bench_decode(model, hf, args, device))
    print(f"decode: {res['decode_tokens_per_s']:.1f} tok/s vs HF {res['hf_decode_tokens_per_s']:.1f}", file=sys.stderr)
    if not args.skip_train:
        res.update(bench_train(model, hf, args, device))
        res.update(train_batch=args.train_batch, train_seq=args.train_seq)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
