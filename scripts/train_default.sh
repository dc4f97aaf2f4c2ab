#!/usr/bin/env bash
# The whole recipe of the embedded default model kinema-tiny (kinema/assets/kinema-tiny/), in order.
# Each stage is resumable (re-run the script); stages whose output exists are skipped.
#
# Wall time of each stage as measured here (shared 2-core CPU, ~7 jobs at once, load avg ~10):
#   1. synthetic data, 1500 train + 100 eval clips (17 frames @ 8 fps, 128x128, sound) ...... ~7 min
#   2. text tokenizer (sentencepiece on synthetic + template captions) ........................ ~1 min
#   3. audio codec (configs/audio_codec/small.yaml, 1756 steps; its engineer's run) .......... ~30 min
#   4. video tokenizer (configs/video_tokenizer/small.yaml, run small2, 1000 steps EMA) ....... ~25 min
#   5. token extraction (128x128, 2 audio RVQ levels = 1 kbps), 2 workers, 2-4 s/clip ........ ~7 min
#      (the shipped LM saw the first 115 training clips only: the CPU budget ran out)
#   6. LM (configs/lm/kinema_tiny.yaml: dim 192, 3 layers, 2.9 s/step; DeepSpeed ZeRO-1,
#      2 CPU ranks, micro-batch 2 each) ...................................................... 15 min cap
#   7. export bf16 weights to kinema/assets/kinema-tiny/lm
# No GPU was available for these runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export DS_ACCELERATOR=cpu OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
LM_CLIPS=${LM_CLIPS:-115}
EVAL_CLIPS=${EVAL_CLIPS:-16}
stage() { echo "== $1 ($(date -u +%H:%M:%S))"; }

stage "1. synthetic data"
[ -f data/synth_train/manifest.jsonl ] || kinema synth --out data/synth_train --clips 1500 --seconds 2.125 --seed 0 --workers 2
[ -f data/synth_eval/manifest.jsonl ] || kinema synth --out data/synth_eval --clips 100 --seconds 2.125 --seed 900000 --workers 2

if [ "${RETRAIN_TOKENIZERS:-0}" = 1 ]; then
  stage "2. text tokenizer"
  python scripts/train_text_tokenizer.py --synthetic 5000 --template-captions 5000
  stage "3. audio codec"
  python scripts/train_audio_codec.py --config configs/audio_codec/small.yaml
  stage "4. video tokenizer"
  python scripts/train_video_tokenizer.py --config configs/video_tokenizer/small.yaml
  echo "export the audio codec / video tokenizer runs into kinema/assets/kinema-tiny/ (see their READMEs) before stage 5"
fi

stage "5. token extraction"
python scripts/extract_tokens.py --data data/synth_train --out runs/tokens/train --fps 8 --size 128 128 \
  --frames 17 --kbps 1.0 --workers 2 --limit "$LM_CLIPS"
python scripts/extract_tokens.py --data data/synth_eval --out runs/tokens/eval --fps 8 --size 128 128 \
  --frames 17 --kbps 1.0 --workers 1 --limit "$EVAL_CLIPS"

stage "6. LM"
deepspeed --num_gpus 2 scripts/train_lm.py --config configs/lm/kinema_tiny.yaml \
  --deepspeed_config configs/deepspeed/zero1.json

stage "7. export"
python - <<'EOF'
import torch
from kinema.lm.model import KinemaLM
lm = KinemaLM.from_pretrained("runs/lm_kinema_tiny/final")
lm.save_pretrained("kinema/assets/kinema-tiny/lm", dtype=torch.bfloat16)
print("wrote kinema/assets/kinema-tiny/lm")
EOF
stage "done"
