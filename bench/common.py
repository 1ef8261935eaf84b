"""Shared by the bench scripts: where the data is, and how figures are recorded.

Every figure goes to stdout and is appended to bench/RESULTS.md with the command that produced
it, the date, the commit and the machine, so that any number can be reproduced and compared.
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
MULTI30K = ROOT.parent / "shared" / "corpora" / "multi30k"
BUNDLED = ROOT / "corpora" / "en-de"
WORK = ROOT / "bench" / "work"  # scratch space for runs and generated corpora (git-ignored)


def require_multi30k() -> Path:
    if not (MULTI30K / "train.en.gz").is_file():
        sys.exit(f"Multi30k not found at {MULTI30K}: this bench needs ../shared/corpora/multi30k")
    return MULTI30K


def multi30k_test_set() -> tuple[list[str], list[str]]:
    """test_2016_flickr: (English sources, German references), 1,000 lines each."""
    from tinytrans.textio import read_lines
    test = require_multi30k() / "test_2016_flickr"
    return list(read_lines(Path(f"{test}.en.gz"))), list(read_lines(Path(f"{test}.de.gz")))


def machine() -> str:
    """The CPU as vendor, family/model/stepping, flags and name (hardware.cpu_identity: the
    model name alone is "AMD EPYC" for two different families here), cores, torch, Python."""
    from tinytrans.hardware import cpu_identity
    return (f"{cpu_identity()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")


def matmul_gflops() -> float:
    """fp32 1024x1024 matrix products per second right now: how fast this shared machine is
    at the moment of the measurement, so figures taken at different times can be compared."""
    a = torch.randn(1024, 1024)
    a @ a
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 1.0:
        a @ a
        n += 1
    return 2 * 1024 ** 3 * n / (time.perf_counter() - start) / 1e9


def commit() -> str:
    """The commit of the tinytrans this process imported (a bench run with PYTHONPATH set to
    another checkout measures that checkout's code)."""
    tree = library_tree()
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=tree,
                               capture_output=True, text=True).stdout.strip()
        where = "" if tree == ROOT else f" (tinytrans from {tree}, bench scripts from {ROOT})"
        return out + ("+uncommitted" if dirty else "") + where
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def worktree(revision: str) -> Path:
    """The source tree of `revision`: a git worktree under bench/work (made once), or, for
    "HEAD+", the working tree itself."""
    if revision == "HEAD+":
        return ROOT
    tree = WORK / f"tree-{revision}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], cwd=ROOT,
                       check=True, capture_output=True)
    return tree


def library_tree() -> Path:
    """The checkout whose tinytrans package this process imports."""
    import tinytrans
    return Path(tinytrans.__file__).resolve().parent.parent


def best_of_two(translator, lines: list[str], cfg, options=None) -> tuple[list[str], float]:
    """The texts of translating `lines`, and the faster of two runs' seconds (one run of a
    configuration varies by up to 20% here)."""
    from tinytrans.lines import LineOptions
    seconds = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        out = [t.text for t in translator.translate(lines, cfg, options=options or LineOptions())]
        seconds = min(seconds, time.perf_counter() - start)
    return out, seconds


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def record(title: str, lines: list[str]) -> None:
    """Print the figures and append them, with provenance, to bench/RESULTS.md."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    command = " ".join(["python", str(shown), *sys.argv[1:]])
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = [f"## {title}", "", f"- command: `{command}`", f"- date: {stamp}; commit {commit()}",
             f"- machine: {machine()}; fp32 matmul now: {matmul_gflops():.0f} GFLOP/s", ""] + lines + [""]
    text = "\n".join(block)
    print(text)
    if not RESULTS.exists():
        RESULTS.write_text("# Bench results\n\nAppended by the scripts in bench/; newest last.\n\n")
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write(text + "\n")
