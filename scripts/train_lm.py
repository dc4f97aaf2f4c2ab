"""Train KinemaLM on token shards with DeepSpeed (ZeRO 0-3), resumable, with eval and metrics.

One machine, N GPUs::

    deepspeed --num_gpus 8 scripts/train_lm.py --config configs/lm/300M.yaml \
        --deepspeed_config configs/deepspeed/zero2.json train.steps=100000

Several machines: a hostfile lists ``hostname slots=N`` per line, reachable by passwordless ssh,
same paths everywhere::

    deepspeed --hostfile hosts.txt --master_addr node0 scripts/train_lm.py --config configs/lm/1B.yaml \
        --deepspeed_config configs/deepspeed/zero3.json

CPU (tests, this machine): gloo backend, one thread per process::

    DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 deepspeed --num_gpus 2 scripts/train_lm.py --config configs/lm/tiny.yaml

Without the launcher it runs as a single process. Data: ``data.train``/``data.eval`` shard
directories (scripts/extract_tokens.py); when ``data.train`` is empty, structured synthetic shards
are written to ``<run_dir>/synthetic_{train,eval}`` first. DeepSpeed checkpoints go to
``<run_dir>/ds_checkpoints`` (client state: step, epoch, batch position, RNG) and a rerun resumes
from the latest one; the end of training writes ``<run_dir>/final`` in save_pretrained format.
With ``train.handoff_dir`` every stop also writes a hand-off there (kinema.handoff: bf16 weights, step,
metrics; small enough to commit), and a run with no DeepSpeed checkpoint goes on from it at that step:
how a schedule longer than one machine's lifetime is trained. ``train.handoff_every`` N rewrites it at
every N-th step's checkpoint as well, for a machine that may be taken away without a clean stop.
Mixed precision: bf16 autocast in the forward (fp32 master weights and optimizer state in the
engine), which works on every DeepSpeed accelerator including CPU. A non-finite loss on any rank
skips that micro-batch on every rank (with ``grad_accum`` 1 the whole update: no optimizer or LR
step) and is recorded as ``nonfinite_skipped`` in metrics.jsonl; 5 in a row stop the run with one
``train_lm: error:`` line and exit code 2. ``train.inject_nonfinite_at`` forces such steps (drills).
metrics.jsonl's ``train_loss`` is the mean over every micro-batch of the log window on every rank;
with a task mix, each eval also scores every task on its own (``eval_t2v_loss``, ...), so the loss
curve shows each task's progress instead of one noisy mixed number. With ``data.change_weight`` > 1
the train loss is weighted toward the video tokens that change between latent frames, while the eval
losses stay the plain mean, so eval losses compare across runs and train losses do not.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

if "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available():
    os.environ["DS_ACCELERATOR"] = "cpu"
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kinema.checkpoint import rng_state, set_rng_state  # noqa: E402
from kinema.config import from_dict, load_config, save_config, to_dict  # noqa: E402
from kinema.distributed import all_finite, deepspeed_config, init_distributed  # noqa: E402
from kinema.errors import ConfigError, KinemaError  # noqa: E402
from kinema.handoff import read_handoff, write_handoff  # noqa: E402
from kinema.lm.grow import deepen  # noqa: E402
from kinema.lm.model import KinemaLM, LMConfig  # noqa: E402
from kinema.lm.shards import Record, ShardWriter, TokenShards  # noqa: E402
from kinema.lm.token_data import LengthGroupedBatchSampler, TokenShardDataset, collate, lm_loss, vocab_from_meta  # noqa: E402
from kinema.lm.vocab import Vocab  # noqa: E402
from kinema.training import MetricsLogger, NonFiniteGuard, cosine_lr  # noqa: E402


@dataclass
class DataConfig:
    train: str = ""  # shard directory; empty: synthetic shards
    eval: str = ""  # held-out shard directory; empty with synthetic data: a synthetic one
    vocab: dict = field(default_factory=dict)  # Vocab fields when the shards' meta.json has no "vocab"
    tasks: dict = field(default_factory=dict)  # task -> weight; empty: kinema.lm.token_data default mix
    drop_text_prob: float = 0.1
    max_text_tokens: int = 64
    max_video_frames: int | None = None
    synthetic_samples: int = 64
    synthetic_grid: tuple[int, int, int] = (3, 4, 4)
    # > 1: output video tokens whose code changed since the previous latent frame weigh this much more
    # in the train loss (kinema.lm.token_data.change_weights); the eval losses stay unweighted
    change_weight: float = 1.0


@dataclass
class OptimConfig:
    steps: int = 100
    micro_batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 10
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    bf16: bool = True
    eval_every: int = 50
    eval_batches: int = 8
    ckpt_every: int = 50
    log_every: int = 10
    seed: int = 0
    max_minutes: float = 0.0  # 0: no limit; else stop (after a checkpoint) when exceeded
    # a hand-off directory (kinema.handoff): written at every stop, and read when run_dir has no
    # DeepSpeed checkpoint, so a run goes on at the same step on a machine without runs/ (e.g. via git)
    handoff_dir: str = ""
    # also write the hand-off at every checkpoint whose step is a multiple of this (0: only at the stop),
    # so a session cut off mid-run (no clean stop) still leaves its latest weights outside runs/
    handoff_every: int = 0
    stop_after: int = 0  # testing: exit hard right after the checkpoint of this step (simulated kill)
    # fault drills/tests: the loss of these steps (numbered 1.., as in metrics.jsonl) is made NaN, so
    # the non-finite guard must skip them; never set it for real training
    inject_nonfinite_at: list[int] = field(default_factory=list)


@dataclass
class LMTrainConfig:
    run_dir: str = "runs/lm"
    preset: str = "tiny"
    model: dict = field(default_factory=dict)  # LMConfig overrides on top of the preset
    init_from: str = ""  # start from these weights (save_pretrained dir, same dims and vocab); a resume wins
    # init_from an LM with fewer layers (all else equal): insert identity blocks (kinema.lm.grow), so
    # the deeper run starts at the trained LM's loss
    init_deepen: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    train: OptimConfig = field(default_factory=OptimConfig)


# ----------------------------------------------------------------------------- data
def write_synthetic_shards(root: Path, vocab: Vocab, n: int, grid: tuple[int, int, int], seed: int) -> None:
    """Learnable synthetic codes: each clip's video is a pattern its text determines, drifting over time."""
    if (root / "meta.json").is_file():
        return
    rng = np.random.default_rng(seed)
    t, h, w = grid
    with ShardWriter(root, meta={"vocab": vocab.to_dict(), "synthetic": True}) as wr:
        for i in range(n):
            text = rng.integers(0, vocab.text_size, size=int(rng.integers(2, 6))).tolist()
            tt, hh, ww = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
            video = (text[0] * 7 + text[-1] + tt * (1 + text[0] % 3) + hh * 3 + ww) % vocab.video_codebook_size
            audio = (np.arange(vocab.audio_num_quantizers)[:, None] * 5 + np.arange(2 * t)[None] + text[0]) % vocab.audio_codebook_size
            wr.write(Record(i, key=f"synthetic_{i}", caption="", text=text,
                            arrays={"video": video.astype(np.int32), "audio": audio.astype(np.int32)}))


def code_fingerprints(train: TokenShards, evals: TokenShards | None) -> dict:
    """The encoders that made the shards' codes (extract_tokens.py records them); train and eval must agree."""
    fp = dict(train.meta.get("code_fingerprints") or {})
    other = dict(evals.meta.get("code_fingerprints") or {}) if evals is not None else {}
    clash = [k for k in fp if k in other and other[k] != fp[k]]
    if clash:
        raise ConfigError(f"train and eval shards were made by different {', '.join(clash)} ({fp} vs {other}): "
                          "the eval loss would measure other codes")
    return fp


def resolve_vocab(cfg: LMTrainConfig, shards: TokenShards) -> Vocab:
    """data.vocab when given (checked against the shards), else what the shards' meta.json records."""
    if cfg.data.vocab:
        v = Vocab.from_dict(cfg.data.vocab)
        if isinstance(shards.meta.get("vocab"), dict) and Vocab.from_dict(shards.meta["vocab"]).size != v.size:
            raise ConfigError(f"data.vocab (size {v.size}) does not match the shards' vocabulary "
                              f"(size {Vocab.from_dict(shards.meta['vocab']).size})")
        return v
    return vocab_from_meta(shards.meta)


def batches_for_rank(sampler: LengthGroupedBatchSampler, epoch: int, rank: int, world: int) -> list[list[int]]:
    """This rank's micro-batches of an epoch (every rank gets the same count)."""
    sampler.epoch = int(epoch)
    sampler.source.set_epoch(epoch)  # the dataset's task plans depend on the epoch
    allb = sampler.batches()
    n = len(allb) // world
    if n == 0:
        raise ConfigError(f"{len(allb)} batches per epoch cannot feed {world} processes; add data or lower batch size")
    return allb[rank:n * world:world]


# ----------------------------------------------------------------------------- training
@torch.no_grad()
def evaluate(engine, ds: TokenShardDataset, cfg: LMTrainConfig, rank: int, world: int, device) -> float:
    import torch.distributed as dist

    engine.eval()
    sampler = LengthGroupedBatchSampler(ds, cfg.train.micro_batch_size, seed=cfg.train.seed, shuffle=False)
    mine = batches_for_rank(sampler, 0, rank, world)[: cfg.train.eval_batches]
    tot = torch.zeros(2, dtype=torch.float64)
    for b in mine:
        loss, n = lm_loss(engine, collate([ds[i] for i in b], pad_id=ds.vocab.pad), cfg.train.bf16, device)
        tot += torch.tensor([float(loss) * n, n], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(tot)
    engine.train()
    return float(tot[0] / tot[1].clamp(min=1))


def task_eval_sets(mixed: TokenShardDataset, kw: dict) -> dict[str, TokenShardDataset]:
    """One eval set per task of the mix (each sample laid out as that task, no caption dropout), so the
    loss curve shows each task on its own; empty with a single task, which the mixed eval already is.
    A task no eval sample fits (e.g. v2a on shards without audio) is left out."""
    tasks = mixed.tasks
    if len(tasks) < 2:
        return {}
    sets = {}
    for t in tasks:
        try:
            sets[t] = TokenShardDataset(mixed.shards, mixed.vocab, **{**kw, "tasks": {t: 1.0}, "drop_text_prob": 0.0})
        except ValueError:
            pass
    return sets


def window_mean(total: float, count: int, world: int) -> float | None:
    """Mean train loss over a log window, pooled over every rank's micro-batches (None: all skipped)."""
    import torch.distributed as dist

    t = torch.tensor([total, count], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(t)
    return float(t[0] / t[1]) if t[1] > 0 else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="YAML (configs/lm/*.yaml)")
    p.add_argument("--deepspeed_config", default="configs/deepspeed/zero1.json")
    p.add_argument("--local_rank", type=int, default=-1, help="set by the deepspeed launcher")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=10 model.dim=128")
    args = p.parse_args(argv)
    try:
        return train(args)
    except (KinemaError, ValueError, FileNotFoundError, FloatingPointError) as e:  # FloatingPointError: diverged
        print(f"train_lm: error: {e}", file=sys.stderr)
        return 2


def train(args) -> int:
    import deepspeed
    import torch.distributed as dist

    cfg = load_config(LMTrainConfig, args.config, args.overrides)
    tc = cfg.train
    if tc.handoff_every < 0 or (tc.handoff_every and not tc.handoff_dir):
        raise ConfigError(f"train.handoff_every={tc.handoff_every}: must be >= 0, and needs train.handoff_dir")
    run = Path(cfg.run_dir)
    ds_cfg = deepspeed_config(args.deepspeed_config, tc.micro_batch_size, tc.grad_accum, tc.grad_clip)
    rank, world, device = init_distributed()
    log = print if rank == 0 else (lambda *a, **k: None)

    # data (rank 0 writes synthetic shards, the others wait)
    train_dir, eval_dir = cfg.data.train, cfg.data.eval
    if not train_dir:
        train_dir, eval_dir = str(run / "synthetic_train"), str(run / "synthetic_eval")
        if rank == 0:
            v = Vocab.from_dict(cfg.data.vocab) if cfg.data.vocab else Vocab(64, 256, 32, 2)
            write_synthetic_shards(Path(train_dir), v, cfg.data.synthetic_samples, cfg.data.synthetic_grid, tc.seed)
            write_synthetic_shards(Path(eval_dir), v, max(8, cfg.data.synthetic_samples // 8), cfg.data.synthetic_grid, tc.seed + 1)
        dist.barrier()
    shards = TokenShards(train_dir)
    vocab = resolve_vocab(cfg, shards)
    kw = dict(tasks=cfg.data.tasks or None, drop_text_prob=cfg.data.drop_text_prob,
              max_text_tokens=cfg.data.max_text_tokens, max_video_frames=cfg.data.max_video_frames, seed=tc.seed)
    train_ds = TokenShardDataset(shards, vocab, **kw, change_weight=cfg.data.change_weight)
    eval_ds = TokenShardDataset(TokenShards(eval_dir), vocab, **{**kw, "drop_text_prob": 0.0}) if eval_dir else None
    eval_by_task = task_eval_sets(eval_ds, kw) if eval_ds is not None else {}
    sampler = LengthGroupedBatchSampler(train_ds, tc.micro_batch_size, seed=tc.seed)

    trained_on = code_fingerprints(shards, TokenShards(eval_dir) if eval_dir else None)

    # model + engine
    torch.manual_seed(tc.seed)
    try:
        mcfg = LMConfig.preset(cfg.preset, **{**cfg.model, "vocab_size": vocab.size, "vocab": vocab.to_dict(),
                                              "trained_on": dict(trained_on)})
    except TypeError as e:
        raise ConfigError(f"model: {e}") from None
    model = KinemaLM(mcfg)
    if cfg.init_from:  # a fine-tune (e.g. after the video tokenizer was retrained); checkpoints still win below
        init = KinemaLM.from_pretrained(cfg.init_from).float()
        grown = ""
        if cfg.init_deepen and init.cfg.n_layers != mcfg.n_layers:
            shape = ("vocab_size", "dim", "n_heads", "n_kv_heads", "ffn_dim", "tie_embeddings", "rope_theta",
                     "rope_spatial", "norm_eps")
            differ = [k for k in shape if getattr(init.cfg, k) != getattr(mcfg, k)]
            if differ:
                raise ConfigError(f"init_deepen: {cfg.init_from} differs from this run's model in {', '.join(differ)}, "
                                  "not only in n_layers")
            grown = f" (deepened {init.cfg.n_layers} -> {mcfg.n_layers} layers, new blocks start as the identity)"
            init = deepen(init, mcfg.n_layers)
        if (init.cfg.vocab_size, init.cfg.num_params()) != (mcfg.vocab_size, mcfg.num_params()):
            hint = (" (a shallower LM can be grown with init_deepen=true)"
                    if init.cfg.n_layers < mcfg.n_layers and not cfg.init_deepen else "")
            raise ConfigError(f"init_from {cfg.init_from}: vocab {init.cfg.vocab_size} / {init.cfg.num_params()} params "
                              f"do not match this run's {mcfg.vocab_size} / {mcfg.num_params()}{hint}")
        model.load_state_dict(init.state_dict())
        log(f"initialised from {cfg.init_from}{grown}")
    ckpt_dir = run / "ds_checkpoints"
    start = {"step": 0}  # where this engine's LR schedule starts: a hand-off's step, else 0
    handoff = read_handoff(tc.handoff_dir) if tc.handoff_dir else None
    if handoff is not None and not (ckpt_dir / "latest").is_file():  # a local checkpoint (full state) wins
        carried = KinemaLM.from_pretrained(tc.handoff_dir).float()
        if dataclasses.replace(carried.cfg, trained_on={}) != dataclasses.replace(mcfg, trained_on={}):
            raise ConfigError(f"handoff_dir {tc.handoff_dir}: its model config differs from this run's")
        if carried.cfg.trained_on and mcfg.trained_on and carried.cfg.trained_on != mcfg.trained_on:
            raise ConfigError(f"handoff_dir {tc.handoff_dir} was trained on codes {carried.cfg.trained_on}, these "
                              f"shards hold {mcfg.trained_on} (re-extract them with the hand-off's tokenizers)")
        model.load_state_dict(carried.state_dict())
        start["step"] = handoff["step"]
        if rank == 0 and (Path(tc.handoff_dir) / "metrics.jsonl").is_file() and not (run / "metrics.jsonl").is_file():
            run.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(tc.handoff_dir) / "metrics.jsonl", run / "metrics.jsonl")
        log(f"continuing from the hand-off in {tc.handoff_dir} at step {start['step']} (written "
            f"{handoff.get('written', '?')}): fresh optimizer state, learning rate warmed up again over {tc.warmup} steps")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=tc.lr, betas=tc.betas)

    def lr_factor(s: int) -> float:  # s counts this engine's scheduler steps, from start["step"] on
        f = cosine_lr(s + start["step"], 1.0, tc.warmup, tc.steps, tc.min_lr_ratio)
        return f * min(1.0, (s + 1) / tc.warmup) if start["step"] and tc.warmup > 0 else f  # Adam starts afresh

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched, config=ds_cfg)
    log(f"KinemaLM {cfg.preset}: {mcfg.num_params() / 1e6:.2f}M params, vocab {vocab.size}, "
        f"ZeRO stage {ds_cfg.get('zero_optimization', {}).get('stage', 0)}, {world} process(es), device {device}")

    # resume: from a DeepSpeed checkpoint, else at a hand-off's step (data order as if never stopped)
    step = start["step"]
    epoch, pos = divmod(step * tc.grad_accum, len(batches_for_rank(sampler, 0, rank, world)))
    if (ckpt_dir / "latest").is_file():
        path, client = engine.load_checkpoint(str(ckpt_dir))
        if path is not None:
            step, epoch, pos = client["step"], client["epoch"], client["pos"]
            start["step"] = client.get("start_step", 0)
            set_rng_state(client["rng"])
            log(f"resumed from {path} at step {step}")
    logger = MetricsLogger(run, enabled=rank == 0)
    logger.truncate_after(step)
    if rank == 0:
        save_config(cfg, run / "train_config.yaml")
    guard = NonFiniteGuard(max_in_row=5, log=log)

    my_batches = batches_for_rank(sampler, epoch, rank, world)
    t0, tokens, last = time.time(), 0, time.time()
    window_loss, window_n = 0.0, 0  # this rank's train loss over the micro-batches since the last log
    bar = tqdm(total=tc.steps, initial=step, desc="train_lm", disable=rank != 0)
    try:  # the bar ends its line before any error message
        while step < tc.steps:
            loss_sum, n_ok, n_skipped = 0.0, 0, 0
            for _ in range(tc.grad_accum):
                if pos >= len(my_batches):
                    epoch, pos = epoch + 1, 0
                    my_batches = batches_for_rank(sampler, epoch, rank, world)
                batch = collate([train_ds[i] for i in my_batches[pos]], pad_id=vocab.pad)
                pos += 1
                loss, n = lm_loss(engine, batch, tc.bf16, device)
                if step + 1 in tc.inject_nonfinite_at:
                    loss = loss * float("nan")  # fault drill
                if not all_finite(loss, world):  # every rank skips this micro-batch; the guard stops a run that keeps diverging
                    guard.check(torch.tensor(float("nan")), None, step + 1)
                    n_skipped += 1
                    if tc.grad_accum == 1:
                        continue  # no backward, no optimizer or LR step: weights and optimizer state stay as they are
                    # with accumulation the engine needs its micro-step: this one contributes a zero gradient
                    loss = sum(p.sum() * 0.0 for p in engine.module.parameters())
                else:
                    guard.check(loss, None, step + 1)
                    loss_sum, n_ok = loss_sum + float(loss.detach()), n_ok + 1
                engine.backward(loss)
                engine.step()
                tokens += n * world
            step += 1
            bar.update(1)
            window_loss, window_n = window_loss + loss_sum, window_n + n_ok
            record = {"nonfinite_skipped": n_skipped} if n_skipped else {}  # micro-batches skipped at this step
            if step % tc.log_every == 0 or step == tc.steps:
                dt = time.time() - last
                record.update(lr=engine.get_lr()[0], tokens_per_s=tokens / max(dt, 1e-9))
                mean = window_mean(window_loss, window_n, world)  # every step of the window, every rank
                if mean is not None:
                    record["train_loss"] = mean
                    bar.set_postfix(loss=f"{mean:.3f}")
                tokens, last, window_loss, window_n = 0, time.time(), 0.0, 0
            if record:
                logger.log(step, **record)
            if eval_ds is not None and (step % tc.eval_every == 0 or step == tc.steps):
                ev = evaluate(engine, eval_ds, cfg, rank, world, device)
                per_task = {f"eval_{t}_loss": evaluate(engine, ds, cfg, rank, world, device) for t, ds in eval_by_task.items()}
                logger.log(step, eval_loss=ev, **per_task)
                log(f"step {step}: eval loss {ev:.4f}" + "".join(f", {k[5:-5]} {v:.4f}" for k, v in per_task.items()))
            out_of_time = tc.max_minutes > 0 and (time.time() - t0) / 60 > tc.max_minutes
            if step % tc.ckpt_every == 0 or step == tc.steps or out_of_time:
                client = {"step": step, "epoch": epoch, "pos": pos, "rng": rng_state(), "start_step": start["step"]}
                engine.save_checkpoint(str(ckpt_dir), tag=f"step_{step:08d}", client_state=client)
                stopping = step == tc.steps or out_of_time  # the stop writes its own hand-off below
                if tc.handoff_dir and tc.handoff_every and step % tc.handoff_every == 0 and not stopping:
                    carried = gather_model(engine, mcfg, ckpt_dir, ds_cfg, rank)
                    if carried is not None:
                        write_handoff(tc.handoff_dir, carried, step, run)
                if tc.stop_after and step == tc.stop_after:
                    dist.barrier()
                    os._exit(17)  # simulated crash right after a checkpoint
            if out_of_time:
                log(f"stopping at step {step}: max_minutes {tc.max_minutes} reached (resume by rerunning)")
                break
    finally:
        bar.close()
    if rank == 0:
        logger.plot()
    final = export_final(engine, mcfg, ckpt_dir, run / "final", ds_cfg, rank)
    if final is not None and tc.handoff_dir:
        log(f"hand-off at step {step}: wrote {write_handoff(tc.handoff_dir, final, step, run)}")
    dist.barrier()
    return 0


def gather_model(engine, mcfg: LMConfig, ckpt_dir: Path, ds_cfg: dict, rank: int) -> KinemaLM | None:
    """The engine's weights as a KinemaLM in fp32 on rank 0 (None elsewhere); every rank must call it.
    Under ZeRO-3 the parameters are sharded, so they are read back from the latest checkpoint."""
    import torch.distributed as dist

    stage = ds_cfg.get("zero_optimization", {}).get("stage", 0)
    dist.barrier()
    if stage == 3:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir)) if rank == 0 else None
    else:
        state = {k: v.float() for k, v in engine.module.state_dict().items()} if rank == 0 else None
    if rank != 0:
        return None
    model = KinemaLM(mcfg)
    model.load_state_dict(state)
    return model


def export_final(engine, mcfg: LMConfig, ckpt_dir: Path, out: Path, ds_cfg: dict, rank: int) -> KinemaLM | None:
    """The latest DeepSpeed checkpoint as save_pretrained (config.json + model.safetensors), fp32;
    returns the model on rank 0 (None elsewhere)."""
    model = gather_model(engine, mcfg, ckpt_dir, ds_cfg, rank)
    if model is not None:
        model.save_pretrained(out)
        print(f"wrote {out}")
    return model


if __name__ == "__main__":
    sys.exit(main())
