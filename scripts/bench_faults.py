"""Fault drills: kill -9 a tiny LM training run again and again, fuzz the inputs, count the bad-input table.

    python scripts/bench_faults.py [--kills 4] [--steps 40] [--fuzz-cases 100]

1. An uninterrupted tiny run (single process, DeepSpeed on CPU) gives reference weights.
2. The same command is started, killed with SIGKILL at a random moment, and restarted, ``--kills``
   times, then left to finish. After each restart the step it resumed from is compared with the
   last step it had logged before the kill: no more than ``ckpt_every`` steps may be lost.
3. The final weights are compared with the reference (max abs difference).
4. The media reader and the layout ``revert`` are fuzzed; the bad-input table in docs/bad_input.md
   is counted (rows whose test exists in tests/).

Prints one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cmd(run_dir: Path, steps: int, ckpt_every: int) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "train_lm.py"), "--config", str(REPO / "configs/lm/tiny.yaml"),
            "--deepspeed_config", str(REPO / "configs/deepspeed/zero1.json"), f"run_dir={run_dir}",
            f"train.steps={steps}", f"train.ckpt_every={ckpt_every}", "train.log_every=1", "train.eval_every=1000"]


def _env() -> dict:
    return {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _last_logged_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines() if line.strip()]
    return max(steps, default=0)


def _final_weights(run_dir: Path):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "final" / "model.safetensors"))


RESUMED = re.compile(r"resumed from \S+ at step (\d+)")


def kill_cycles(kills: int, steps: int, ckpt_every: int, seed: int, work: Path) -> dict:
    """Reference run, then ``kills`` SIGKILLs at random moments of a restarted run, then a last run."""
    rng = random.Random(seed)
    ref = work / "reference"
    subprocess.run(_cmd(ref, steps, ckpt_every), env=_env(), check=True, capture_output=True)
    run = work / "killed"
    survived, lost, logged_before_kill = 0, [], None
    for attempt in range(kills + 1):
        log_path = work / f"attempt{attempt}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(_cmd(run, steps, ckpt_every), env=_env(), stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            start = _last_logged_step(run)
            if attempt < kills:  # let it make progress, then kill at a random moment
                deadline = time.time() + 300
                while time.time() < deadline and proc.poll() is None and _last_logged_step(run) <= start:
                    time.sleep(0.1)
                time.sleep(rng.uniform(0.0, 2.0))
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    survived += 1
            proc.wait()
        text = log_path.read_text()
        resumed = [int(m) for m in RESUMED.findall(text)]
        if logged_before_kill is not None:
            lost.append(logged_before_kill - (resumed[0] if resumed else 0))
        logged_before_kill = _last_logged_step(run)
        if proc.returncode == 0:
            break
    a, b = _final_weights(ref), _final_weights(run)
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    return {"kill_resume_cycles": survived, "completed": (run / "final").is_dir(), "max_lost_steps": max(lost, default=0),
            "ckpt_every": ckpt_every, "final_weights_max_abs_diff": diff}


def fuzz_layout(cases: int, seed: int, vocab=None) -> dict:
    """Mutated valid sequences, truncations and noise through layout.revert."""
    import torch

    from kinema.lm import layout
    from kinema.lm.vocab import Vocab

    vocab = vocab or Vocab(64, 256, 32, 2)
    g = torch.Generator().manual_seed(seed)
    pool = {"text": [1, 2, 3], "video_codes": torch.randint(0, 256, (2, 2, 2), generator=g),
            "audio_codes": torch.randint(0, 32, (2, 6), generator=g),
            "cond_video_codes": torch.randint(0, 256, (1, 2, 2), generator=g),
            "cond_audio_codes": torch.randint(0, 32, (2, 6), generator=g),
            "image_codes": torch.randint(0, 256, (1, 2, 2), generator=g),
            "cond_video_after_codes": torch.randint(0, 256, (1, 2, 2), generator=g)}
    valid = []
    for task, (prefix, output) in layout.SPEC.items():
        kwargs = {layout.ARG[seg]: pool[layout.ARG[seg]] for seg in prefix + output}
        if task == "t2i":
            kwargs["video_codes"] = kwargs["video_codes"][:1]
        valid.append(layout.build(task, vocab, **kwargs).ids)
    layout_errors, layout_findings = 0, []
    for i in range(cases):
        ids = valid[i % len(valid)].clone()
        kind = i % 3
        if kind == 0:  # replace random positions with random ids (some outside the vocabulary)
            where = torch.randint(0, len(ids), (int(torch.randint(1, 6, (1,), generator=g)),), generator=g)
            ids[where] = torch.randint(-3, vocab.size + 3, (len(where),), generator=g)
        elif kind == 1:  # truncate
            ids = ids[: int(torch.randint(0, len(ids), (1,), generator=g))]
        else:  # pure noise
            ids = torch.randint(0, vocab.size, (int(torch.randint(0, 80, (1,), generator=g)),), generator=g)
        try:
            layout.revert(ids, vocab, video_hw=(2, 2))
        except ValueError:
            layout_errors += 1
        except Exception as e:  # anything but a clear ValueError is a finding
            layout_findings.append(f"{type(e).__name__}: {e}")
    return {"errors": layout_errors, "findings": layout_findings}


def fuzz(cases: int, seed: int) -> dict:
    sys.path.insert(0, str(REPO / "scripts"))
    import fuzz_media  # noqa: E402

    media = fuzz_media.run(cases, seed)
    lay = fuzz_layout(cases, seed)
    layout_findings = lay["findings"]
    return {"fuzz_cases": 2 * cases, "media_crashes": media["crashes"] + media["hangs"] + len(media["findings"]),
            "layout_findings": len(layout_findings), "crashes_found": media["crashes"] + media["hangs"]
            + len(media["findings"]) + len(layout_findings)}


def table_coverage() -> dict:
    doc = REPO / "docs" / "bad_input.md"
    if not doc.is_file():
        return {"bad_input_cases_listed": 0, "bad_input_cases_tried": 0}
    rows = [line for line in doc.read_text().splitlines() if line.startswith("|") and "`tests/" in line]
    tests_text = {p.name: p.read_text() for p in (REPO / "tests").glob("test_*.py")}
    tried = 0
    for row in rows:
        m = re.search(r"`tests/(test_\w+\.py)::(\w+)`", row)
        if m and m.group(1) in tests_text and f"def {m.group(2)}" in tests_text[m.group(1)]:
            tried += 1
    listed = len([line for line in doc.read_text().splitlines() if line.startswith("| ") and not line.startswith("| input")
                  and not line.startswith("| ---")])
    return {"bad_input_cases_listed": listed, "bad_input_cases_tried": tried,
            "bad_input_coverage": tried / listed if listed else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=4)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--ckpt-every", type=int, default=5)
    ap.add_argument("--fuzz-cases", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kinema_faults_"))
    try:
        result = kill_cycles(args.kills, args.steps, args.ckpt_every, args.seed, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.update(fuzz(args.fuzz_cases, args.seed))
    result.update(table_coverage())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
