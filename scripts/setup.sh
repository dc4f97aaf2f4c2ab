#!/usr/bin/env bash
# Install kinema and everything it needs, keeping PyTorch at the build this machine already has
# (CPU here; a CUDA build on a GPU machine is left as it is).
#   bash scripts/setup.sh          # runtime + test/bench tools
# Idempotent: running it twice changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=${KINEMA_TORCH_VERSION:-2.13.0}

# 1. torch first, pinned. If a torch is already installed (a CUDA build on a GPU box), keep it.
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch==${TORCH_VERSION}"
fi
installed_torch=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")

# 2. Everything else, with torch held at what is installed so no dependency can pull a new build.
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==${installed_torch}" > "$constraints"
export DS_BUILD_OPS=0 DS_ACCELERATOR=${DS_ACCELERATOR:-$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")}
"$PY" -m pip install -q -c "$constraints" -e ".[dev]"

after=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
if [ "$after" != "$installed_torch" ]; then
  echo "setup: pip replaced torch ${installed_torch} with ${after}; aborting" >&2
  exit 1
fi

# 3. torchaudio wheels ship CUDA-only compiled libraries. On a CPU-only torch they make
#    `import torchaudio` fail; kinema only uses the pure-Python functional parts, so remove them.
"$PY" - <<'PYEOF'
import importlib.util, pathlib, torch
spec = importlib.util.find_spec("torchaudio")
if spec is not None and torch.version.cuda is None:
    lib = pathlib.Path(spec.origin).parent / "lib"
    for so in lib.glob("*.so"):
        so.unlink()
        print(f"setup: removed CUDA-only {so.name} (CPU torch)")
PYEOF
"$PY" -c "import torch, torchaudio, av, deepspeed, kinema; print('setup: ok, torch', torch.__version__)"
