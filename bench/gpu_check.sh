#!/usr/bin/env bash
# The GPU path, proven in one command on a machine with a CUDA GPU (about 7 minutes on one GPU):
#   1. the CUDA tests (tests/test_cuda.py: GPU = CPU in fp32, search, pinned copies, bf16 training)
#   2. prepare Multi30k en-de once (preset small's tokenizer), then train preset small on it for
#      4 minutes in bf16 on the GPU: target tokens/s and peak GPU memory
#   3. decode test_2016_flickr with beam 5 on the GPU: sentences/s and BLEU (sacrebleu signature)
#
# Usage: bench/gpu_check.sh [MULTI30K_DIR]
#   MULTI30K_DIR holds train/val/test_2016_flickr .en.gz/.de.gz (default: ../shared/corpora/multi30k
#   beside the checkout, as for the other benches). Results are printed, and written as a
#   RESULTS.md block to $OUT/gpu_check.md when $OUT is set (the device tool), else to
#   bench/work/gpu-check/gpu_check.md; paste that block into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

M30K="${1:-../shared/corpora/multi30k}"
WORK=bench/work/gpu-check
REPORT="${OUT:-$WORK}/gpu_check.md"
mkdir -p "$WORK" "$(dirname "$REPORT")"

python - <<'EOF'
import importlib.util, sys
missing = [m for m in ("torch", "sentencepiece", "sacrebleu", "typer", "rich", "safetensors", "pytest")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: missing {', '.join(missing)}: pip install -e '.[dev]' (keeping the CUDA torch)")
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: this PyTorch ({torch.__version__}) sees no CUDA GPU")
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
for side in train.en train.de val.en val.de test_2016_flickr.en test_2016_flickr.de; do
    [ -f "$M30K/$side.gz" ] || { echo "gpu_check: $M30K/$side.gz not found (give MULTI30K_DIR)" >&2; exit 2; }
done

echo "== 1/3 CUDA tests"
python -m pytest -q tests/test_cuda.py 2>&1 | tee "$WORK/tests.txt"

echo "== 2/3 prepare Multi30k, train preset small for 4 minutes in bf16"
python -m tinytrans prepare --train "$M30K/train" --valid "$M30K/val" --preset small \
    --output "$WORK/data" --quiet
python - "$WORK" "$REPORT" "$M30K" <<'EOF'
import json, subprocess, sys, time
from pathlib import Path
import torch
sys.path.insert(0, "bench")
from common import commit, machine
from tinytrans.config import resolve_train_config
from tinytrans.train import train

work, report, m30k = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
run = work / "small-bf16"
cfg = resolve_train_config({"data": {"prepared": str(work / "data")},
                            "train": {"max_time": 4.0, "precision": "bf16", "device": "cuda"}},
                           "small")
torch.cuda.reset_peak_memory_stats()
result = train(cfg, run, overwrite=True)
peak_gb = torch.cuda.max_memory_allocated() / 2**30
reserved_gb = torch.cuda.max_memory_reserved() / 2**30

print("== 3/3 decode test_2016_flickr, beam 5", flush=True)
out = subprocess.run([sys.executable, "-m", "tinytrans", "evaluate", "--model", str(run),
                      "--test", str(m30k / "test_2016_flickr"), "--beam", "5", "--device", "cuda",
                      "--json"], capture_output=True, text=True, check=True).stdout
scores = json.loads(out.strip().splitlines()[-1])
gpu = torch.cuda.get_device_name(0)
lines = [
    "## GPU check: preset small on Multi30k, 4 minutes in bf16, beam 5 on test_2016_flickr",
    "",
    f"- command: `bench/gpu_check.sh {m30k}`",
    f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; commit {commit()}",
    f"- machine: {gpu}, CUDA {torch.version.cuda}; host {machine()}",
    "",
    f"- training: {result.state.step:,} updates in {result.state.elapsed / 60:.1f} min "
    f"(validations included), {result.tokens_per_second:,.0f} target tokens/s (validation time "
    f"left out), stopped: {result.stop_reason}",
    f"- peak GPU memory: {peak_gb:.2f} GiB allocated ({reserved_gb:.2f} GiB reserved by the caching allocator)",
    f"- best validation BLEU (greedy): {result.state.best_bleu:.2f} at step {result.state.best_step}",
    f"- test_2016_flickr, beam 5, checkpoint best: BLEU {scores['bleu']:.2f}, chrF {scores['chrf']:.2f}, "
    f"{scores['sentences_per_second']:.1f} sentences/s ({scores['signatures']['bleu']})",
    "",
]
text = "\n".join(lines)
print(text)
report.write_text(text)
EOF
echo "gpu_check: done; the RESULTS.md block is in $REPORT"
