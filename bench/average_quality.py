"""Checkpoint averaging on Multi30k: BLEU of the best checkpoint against the average of the last
N step checkpoints, on val and test_2016_flickr, beam 5.

Uses a run trained by `python bench/train_quality.py multi30k` (give its directory); averages are
written to a scratch copy of the run's checkpoints directory so the run itself is not touched.

Usage: python bench/average_quality.py RUN_DIR [N ...]     (default N: 2 3 5 10, as many as exist)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import sacrebleu

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, record, require_multi30k  # noqa: E402

from tinytrans.average import average_checkpoints  # noqa: E402
from tinytrans.checkpoint import training_checkpoints  # noqa: E402
from tinytrans.config import SearchConfig  # noqa: E402
from tinytrans.textio import read_lines  # noqa: E402
from tinytrans.translate import Translator  # noqa: E402


def bleu(run_dir: Path, checkpoint: str, prefix: Path) -> float:
    translator = Translator(run_dir, checkpoint, "cpu", "fp32")
    hyps = [t.text for t in translator.translate(read_lines(Path(f"{prefix}.en.gz")), SearchConfig(beam=5))]
    return sacrebleu.corpus_bleu(hyps, [list(read_lines(Path(f"{prefix}.de.gz")))]).score


def main() -> None:
    run_dir = Path(sys.argv[1])
    wanted = [int(a) for a in sys.argv[2:]] or [2, 3, 5, 10]
    m30k = require_multi30k()
    found = training_checkpoints(run_dir)
    scratch = WORK / "average-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    rows = ["| weights | checkpoints (steps) | valid BLEU | test BLEU |", "|---|---|---|---|"]
    rows.append(f"| best | {run_dir / 'checkpoints' / 'best.safetensors'} | "
                f"{bleu(run_dir, 'best', m30k / 'val'):.2f} | {bleu(run_dir, 'best', m30k / 'test_2016_flickr'):.2f} |")
    for n in [n for n in wanted if n <= len(found)]:
        path = average_checkpoints(found[-n:], scratch / f"average-{n}.safetensors")
        steps = ", ".join(p.stem.removeprefix("step-").lstrip("0") for p in found[-n:])
        rows.append(f"| average of the last {n} | {steps} | {bleu(run_dir, str(path), m30k / 'val'):.2f} | "
                    f"{bleu(run_dir, str(path), m30k / 'test_2016_flickr'):.2f} |")
    missing = [n for n in wanted if n > len(found)]
    rows += ["", f"- run: {run_dir}; beam 5, sacreBLEU 13a cased"
             + (f"; not measured: last {missing} (the run kept {len(found)} checkpoints)" if missing else "")]
    record("Checkpoint averaging on Multi30k en-de", rows)


if __name__ == "__main__":
    main()
