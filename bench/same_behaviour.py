"""Does a change of structure keep behaviour? Train and translate with two commits, side by side.

    python bench/same_behaviour.py BEFORE [AFTER]     # AFTER defaults to the working tree

Each commit is checked out into bench/work/ (a git worktree) and runs the same commands as
separate processes, alternating (before, after, before, after) so a change in the machine's load
falls on both: `tinytrans train` (tiny preset, 200 updates, fp32, 2 threads, bundled corpus) and
`tinytrans translate` of the bundled test set (beam 5, fp32). Reported: whether the training
losses, the final weights and the translations are identical (md5), target tokens/s, and the
seconds of the translate process (start-up and model load included).
Where the Multi30k model of `python bench/train_quality.py multi30k` exists, each side also
translates Multi30k's test_2016_flickr with it in every decoding mode (multi30k_modes: beam 5,
greedy, n-best, two samplings, constraints, alignments, and CTranslate2 on its export): md5 of
the output and seconds of the process; where a mode's output changed, how many lines are
identical, both sides' BLEU (for one translation per line) and the first differing lines.
Both sides do exactly the same work.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BUNDLED, MULTI30K, WORK, multi30k_test_set, record, worktree  # noqa: E402

STEPS, ROUNDS = 200, 2
MULTI30K_RUN = WORK / "quality-multi30k"
CT2_EXPORT = WORK / "ct2-quality-multi30k-fp32"  # its export, made by the tree that runs this


def run(tree: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    tinytrans = [sys.executable, "-m", "tinytrans"]
    subprocess.run(["rm", "-rf", str(out)], check=True)
    subprocess.run(tinytrans + ["train", "--preset", "tiny", "--train", str(BUNDLED / "train"),
                                "--valid", str(BUNDLED / "valid"), "--src", "en", "--tgt", "de",
                                "--output", str(out), "--max-steps", str(STEPS), "--precision",
                                "fp32", "--threads", "2", "--validate-every", "1000",
                                "--checkpoint-every", str(STEPS), "--quiet"],
                   cwd=tree, env=env, check=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in records if r["event"] == "log"]
    start = time.perf_counter()
    translation = subprocess.run(tinytrans + ["translate", "--model", str(out), "--checkpoint",
                                              "last", "--precision", "fp32", "--threads", "2",
                                              "--input", str(BUNDLED / "test.en")],
                                 cwd=tree, env=env, check=True, capture_output=True).stdout
    translate_seconds = time.perf_counter() - start
    weights = hashlib.md5()
    for path in sorted((out / "checkpoints").glob("step-*.safetensors")):
        with __import__("safetensors").safe_open(str(path), "pt") as handle:
            for key in sorted(k for k in handle.keys() if k.startswith("model/")):
                weights.update(handle.get_tensor(key).numpy().tobytes())
    return {"losses": [r["loss"] for r in logs], "tokens_per_second": max(r["tokens_per_second"] for r in logs),
            "weights": weights.hexdigest(), "translations": hashlib.md5(translation).hexdigest(),
            "translate_seconds": translate_seconds, **translate_multi30k(tree, env)}


def older_readable_copy(run_dir: Path) -> Path:
    """`run_dir` as an older tinytrans reads it: its files linked, and config.toml without the
    fine-tuning keys (train.init*, at their defaults here), which an older one calls unknown."""
    copy = WORK / f"same-{run_dir.name}"
    copy.mkdir(exist_ok=True)
    for path in run_dir.iterdir():
        if path.name != "config.toml" and not (copy / path.name).exists():
            (copy / path.name).symlink_to(path.resolve())
    lines = (run_dir / "config.toml").read_text().splitlines(keepends=True)
    (copy / "config.toml").write_text("".join(line for line in lines if not line.startswith("init")))
    return copy


def multi30k_modes() -> dict[str, list[str]]:
    """The decoding modes compared, each as the arguments of `tinytrans translate` (the first 300
    test sentences for the slower ones): every strategy of the search loop, and CTranslate2."""
    source = WORK / "same-test.en"
    short, constraints = WORK / "same-test300.en", WORK / "same-test300.constraints"
    if not constraints.is_file():
        english, german = multi30k_test_set()
        source.write_text("".join(line + "\n" for line in english), encoding="utf-8")
        short.write_text("".join(line + "\n" for line in english[:300]), encoding="utf-8")
        constraints.write_text("".join(line + "\n" for line in reference_phrases(german[:300])),
                               encoding="utf-8")
    run = ["--model", str(older_readable_copy(MULTI30K_RUN)), "--precision", "fp32"]
    ct2 = ["--model", str(CT2_EXPORT), "--engine", "ctranslate2"]
    return {
        "beam 5": [*run, "--beam", "5", "--input", str(source)],
        "beam 1": [*run, "--beam", "1", "--input", str(source)],
        "n-best 5": [*run, "--beam", "5", "--nbest", "5", "--input", str(short)],
        "sampling top-10, seed 7": [*run, "--sample", "10", "--nbest", "3", "--seed", "7",
                                    "--input", str(short)],
        "sampling top-p 0.9": [*run, "--sample", "all", "--temperature", "0.7", "--top-p", "0.9",
                               "--seed", "3", "--input", str(short)],
        "constraints": [*run, "--constraints", str(constraints), "--input", str(short)],
        "alignments, n-best 2": [*run, "--nbest", "2", "--alignment", "--input", str(short)],
        "ctranslate2 beam 5, n-best 2": [*ct2, "--beam", "5", "--nbest", "2", "--input", str(source)],
        "ctranslate2 beam 1": [*ct2, "--beam", "1", "--input", str(source)],
    }


def reference_phrases(references: list[str]) -> list[str]:
    """Constraints for every other sentence: its reference's longest word (every fifth, its two
    longest, tab-separated)."""
    lines = []
    for i, reference in enumerate(references):
        words = sorted(reference.rstrip(".").split(), key=len, reverse=True)
        lines.append("" if i % 2 else "\t".join(words[:2]) if i % 5 == 0 else words[0])
    return lines


def translate_multi30k(tree: Path, env: dict[str, str]) -> dict:
    """md5 and seconds of `tinytrans translate` of test_2016_flickr in each decoding mode."""
    if not (MULTI30K_RUN / "config.toml").is_file() or not (MULTI30K / "test_2016_flickr.en.gz").is_file():
        return {}
    if not CT2_EXPORT.is_dir():
        subprocess.run([sys.executable, "-m", "tinytrans", "export", "--model", str(MULTI30K_RUN),
                        "--output", str(CT2_EXPORT)], check=True, capture_output=True)
    found = {}
    for mode, args in multi30k_modes().items():
        start = time.perf_counter()
        output = subprocess.run([sys.executable, "-m", "tinytrans", "translate", "--threads", "2",
                                 *args], cwd=tree, env=env, check=True, capture_output=True).stdout
        found[f"multi30k {mode}"] = (hashlib.md5(output).hexdigest(), time.perf_counter() - start,
                                     output.decode("utf-8"))
    return found


BLEU_MODES = ("beam 5", "beam 1", "ctranslate2 beam 1")  # one plain line out per test sentence
SHOWN_DIFFERENCES = 3


def differences(results: dict[str, list[dict]], before: str, after: str) -> list[str]:
    """For each Multi30k mode whose output changed: how many lines are identical, the BLEU of
    both sides where the output is one translation per line, and the first differing lines (a
    faster kernel may change floating-point sums, and with them a close call of the search)."""
    import sacrebleu
    a, b = results[before][0], results[after][0]
    reference = multi30k_test_set()[1]
    notes = []
    for key in (k for k in a if k.startswith("multi30k") and a[k][0] != b[k][0]):
        old, new = a[key][2].splitlines(), b[key][2].splitlines()
        same = sum(x == y for x, y in zip(old, new))
        note = f"- {key}: {same:,} of {max(len(old), len(new)):,} lines identical"
        if key.removeprefix("multi30k ") in BLEU_MODES:
            bleu = [sacrebleu.corpus_bleu(side, [reference]).score for side in (old, new)]
            note += f"; BLEU {bleu[0]:.2f} -> {bleu[1]:.2f}"
        notes.append(note)
        shown = [(x, y) for x, y in zip(old, new) if x != y][:SHOWN_DIFFERENCES]
        notes += [f"  - `{x}` -> `{y}`" for x, y in shown]
    return notes


def multi30k_identical(results: dict[str, list[dict]], before: str, after: str) -> str:
    """Whether every round of both sides gave the same Multi30k translations ("not run" when the
    Multi30k model or data was missing)."""
    keys = [k for k in results[before][0] if k.startswith("multi30k")]
    if not keys:
        return "not run"
    return str(all(r[k][0] == results[before][0][k][0]
                   for k in keys for side in (before, after) for r in results[side]))


def main() -> None:
    before = sys.argv[1]
    after = sys.argv[2] if len(sys.argv) > 2 else "HEAD+"
    trees = {name: worktree(name) for name in (before, after)}
    results: dict[str, list[dict]] = {before: [], after: []}
    for _ in range(ROUNDS):
        for name, tree in trees.items():
            results[name].append(run(tree, WORK / f"same-{name}"))
    a, b = results[before][0], results[after][0]
    rows = ["| | " + before + " | " + after + " |", "|---|---|---|",
            f"| training losses ({len(a['losses'])} logs) | {a['losses'][-1]:.6f} | {b['losses'][-1]:.6f} |",
            f"| final weights md5 | {a['weights'][:12]} | {b['weights'][:12]} |",
            f"| translations md5 (bundled test, beam 5) | {a['translations'][:12]} | {b['translations'][:12]} |",
            "| target tokens/s, each round | " + ", ".join(f"{r['tokens_per_second']:,.0f}" for r in results[before])
            + " | " + ", ".join(f"{r['tokens_per_second']:,.0f}" for r in results[after]) + " |",
            "| translate seconds (whole process, bundled test, beam 5), each round | "
            + ", ".join(f"{r['translate_seconds']:.2f}" for r in results[before]) + " | "
            + ", ".join(f"{r['translate_seconds']:.2f}" for r in results[after]) + " |",
            *[f"| {key}: md5, seconds each round | {a[key][0][:12]}, "
              + ", ".join(f"{r[key][1]:.2f}" for r in results[before]) + f" | {b[key][0][:12]}, "
              + ", ".join(f"{r[key][1]:.2f}" for r in results[after]) + " |"
              for key in a if key.startswith("multi30k")],
            "", f"- identical: losses {a['losses'] == b['losses']}, weights {a['weights'] == b['weights']}, "
            f"translations {a['translations'] == b['translations']}, Multi30k translations "
            f"{multi30k_identical(results, before, after)}; repeatable within each side: "
            f"{all(r['weights'] == results[n][0]['weights'] for n in results for r in results[n])}",
            f"- tiny preset, {STEPS} updates, fp32, 2 threads; HEAD+ = the working tree",
            *differences(results, before, after)]
    record(f"Same behaviour before and after a restructuring: {before} against {after}", rows)


if __name__ == "__main__":
    main()
