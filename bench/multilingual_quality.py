"""One model for six Multi30k directions (en<->de, en<->fr, en<->cs) against the bilingual en->de.

    python bench/multilingual_quality.py train      # 60 minutes on 2 cores, resumable
    python bench/multilingual_quality.py evaluate   # scores, detection, then RESULTS.md

train: the small preset, `--directions en-de,de-en,en-fr,fr-en,en-cs,cs-en` on
../shared/corpora/multi30k/train (multi-way), validated on val every 1,000 updates, 60 minutes;
its peak RSS and training speed are kept beside the run. Run it alone on the machine.

evaluate: every trained direction on test_2016_flickr with beam 5 (sacreBLEU; tokenized BLEU
for en->de, the literature's scoring against the dataset's tok/ reference), the six directions
between de, fr and cs both through the English pivot (the default) and zero-shot, detection of
the test sentences of all four languages by the run's identifier, and the bilingual en->de model
of the same preset trained 20 minutes (bench/work/quality-multi30k, bench/train_quality.py),
scored the same way in the same run.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, commit, machine, matmul_gflops, record, require_multi30k  # noqa: E402

DIRECTIONS = "en-de,de-en,en-fr,fr-en,en-cs,cs-en"
RUN = WORK / "multilingual-multi30k"
TRAINING = WORK / "multilingual-multi30k.training.json"
BILINGUAL = WORK / "quality-multi30k"
LANGUAGES = ("en", "de", "fr", "cs")
MINUTES = 60


def train() -> None:
    data = require_multi30k()
    command = [sys.executable, "-m", "tinytrans", "train", "--preset", "small",
               "--train", str(data / "train"), "--valid", str(data / "val"),
               "--directions", DIRECTIONS, "--max-time", str(MINUTES),
               "--validate-every", "1000", "--checkpoint-every", "1000", "--output", str(RUN)]
    gflops = matmul_gflops()
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    records = [json.loads(line) for line in (RUN / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in records if r["event"] == "log"]
    TRAINING.write_text(json.dumps({
        "command": " ".join(command), "seconds": seconds, "peak_rss_mb": peak_mb,
        "updates": logs[-1]["step"] if logs else 0,
        "tokens_per_second": sum(r["tokens_per_second"] for r in logs) / max(len(logs), 1),
        "matmul_gflops": gflops, "machine": machine(), "commit": commit()}, indent=1))


if __name__ == "__main__":
    {"train": train}[sys.argv[1] if len(sys.argv) > 1 else "train"]()
