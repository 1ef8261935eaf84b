"""Load on `tinytrans serve`: throughput and latency as concurrent clients grow, on loopback only.

    python bench/serve_load.py [RUN_DIR] [--requests 256] [--engines torch,ctranslate2]

For N = 1, 4, 16, 64 clients, the first `--requests` sentences of Multi30k test_2016_flickr are
dealt out round-robin to N client threads, each sending its sentences one per request (a
LibreTranslate request: {"q": sentence, "source", "target"}) and waiting for each answer before
the next. Every N does the same work: the same sentences, beam 5, the same server process.
Reported: sentences/s, latency p50/p95/p99, errors (must be 0), whether every client got exactly
its own translations (compared with `tinytrans translate --input` of the same sentences, same
model, engine and precision), and the server's peak RSS. The bar: 16 clients give at least 3x
the sentences/s of 1 client. Each engine in turn, in the same run: PyTorch on the run directory
(fp32), then CTranslate2 on its export (`tinytrans export`, fp32), one server at a time.

    --baseline REV   also serve with the PyTorch engine of commit REV (a git worktree), in the
                     same run, before the others: the same work, the same machine, minutes apart
    --clients 1,16   the client counts to measure (default 1,4,16,64)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, WORK, multi30k_test_set, record, worktree  # noqa: E402


CLIENTS = (1, 4, 16, 64)


def start_server(run_dir: Path, engine: str, threads: int,
                 tree: Path = ROOT) -> tuple[subprocess.Popen, str]:
    engine_flags = ["--precision", "fp32"] if engine == "torch" else ["--engine", engine]
    process = subprocess.Popen(
        [sys.executable, "-m", "tinytrans", "serve", "--model", str(run_dir), "--port", "0",
         "--host", "127.0.0.1", "--device", "cpu", *threads_flag(threads), *engine_flags],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)})
    for line in process.stderr:
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        if found:
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
            return process, found[0]
    sys.exit("the server did not start")


def threads_flag(threads: int | None) -> list[str]:
    return [] if threads is None else ["--threads", str(threads)]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ask(url: str, sentence: str) -> tuple[float, int, str]:
    """(seconds, status, translation or error) of one request."""
    body = json.dumps({"q": sentence, "source": "en", "target": "de"}).encode()
    req = urllib.request.Request(url + "/translate", data=body,
                                 headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=300) as reply:
            answer = json.loads(reply.read())
            return time.perf_counter() - start, reply.status, answer["translatedText"]
    except urllib.error.HTTPError as error:
        return time.perf_counter() - start, error.code, error.read().decode()


def load(url: str, sentences: list[str], clients: int) -> tuple[float, list[tuple]]:
    """All sentences sent by `clients` threads; (seconds, [(index, seconds, status, text)])."""
    shares = [list(range(c, len(sentences), clients)) for c in range(clients)]
    results: list[tuple] = []
    lock = threading.Lock()

    def client(indices: list[int]) -> None:
        for i in indices:
            seconds, status, text = ask(url, sentences[i])
            with lock:
                results.append((i, seconds, status, text))

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, shares))
    return time.perf_counter() - start, results


def reference_translations(model: Path, engine: str, sentences: list[str],
                           threads: int) -> list[str]:
    source, output = WORK / "serve_load.en", WORK / f"serve_load.{engine}.de"
    WORK.mkdir(parents=True, exist_ok=True)
    source.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
    engine_flags = ["--precision", "fp32"] if engine == "torch" else ["--engine", engine]
    subprocess.run([sys.executable, "-m", "tinytrans", "translate", "--model", str(model),
                    *engine_flags, "--device", "cpu", *threads_flag(threads),
                    "--input", str(source), "--output", str(output)], check=True)
    return output.read_text(encoding="utf-8").splitlines()


def exported(run_dir: Path) -> Path:
    """The run exported to CTranslate2 (fp32), made anew for this bench."""
    out = WORK / f"serve-ct2-{run_dir.name}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    subprocess.run([sys.executable, "-m", "tinytrans", "export", "--model", str(run_dir),
                    "--output", str(out)], check=True)
    return out


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def measure(model: Path, engine: str, sentences: list[str], threads: int,
            clients_counts: tuple[int, ...] = CLIENTS, tree: Path = ROOT,
            label: str = "") -> list[str]:
    wanted = reference_translations(model, engine, sentences, threads or 1)
    process, url = start_server(model, engine, threads, tree)
    rows, rates = [], {}
    try:
        load(url, sentences[:16], 4)  # warm-up
        for clients in clients_counts:
            seconds, results = load(url, sentences, clients)
            latencies = [r[1] for r in results]
            errors = sum(r[2] != 200 for r in results)
            own = sum(r[2] == 200 and r[3] == wanted[r[0]] for r in results)
            rates[clients] = len(sentences) / seconds
            rows.append(f"| {engine}{label} | {clients} | {rates[clients]:.1f} | "
                        + " | ".join(f"{1000 * percentile(latencies, p):.0f}" for p in (50, 95, 99))
                        + f" | {errors} | {own}/{len(results)} |")
        rss = peak_rss_mb(process.pid)
    finally:
        process.terminate()
        code = process.wait(timeout=120)
    scaling = (f"16 clients / 1 = {rates[16] / rates[1]:.1f}x (bar >= 3x); "
               if 1 in rates and 16 in rates else "")
    rows.append(f"| {engine}{label}: {scaling}peak RSS {rss:.0f} MB; exit after SIGTERM {code} "
                "| | | | | | |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", nargs="?", type=Path, default=WORK / "quality-multi30k")
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--engines", default="torch,ctranslate2")
    parser.add_argument("--threads", type=int, help="the server's --threads (default: its own)")
    parser.add_argument("--baseline", help="a commit whose PyTorch engine serves first")
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)))
    args = parser.parse_args()
    clients = tuple(int(c) for c in args.clients.split(","))
    sentences = multi30k_test_set()[0][: args.requests]
    rows = ["| engine | clients | sentences/s | p50 ms | p95 ms | p99 ms | errors | own translations |",
            "|---|---|---|---|---|---|---|---|"]
    if args.baseline:
        rows += measure(args.run_dir, "torch", sentences, args.threads, clients,
                        worktree(args.baseline), f" @{args.baseline}")
    for engine in args.engines.split(","):
        model = args.run_dir if engine == "torch" else exported(args.run_dir)
        rows += measure(model, engine, sentences, args.threads, clients)
    rows += ["", f"- {args.requests} sentences per row (Multi30k test_2016_flickr, en-de), beam 5, "
             f"fp32, server --threads {args.threads or 'by default (HEAD: every core but one)'}; the clients run on the same 2-core machine "
             "over loopback; one server at a time",
             f"- model: {args.run_dir} (CTranslate2: its export, `tinytrans export`)"]
    record("Serving under load: tinytrans serve, PyTorch and CTranslate2 engines", rows)


if __name__ == "__main__":
    main()
