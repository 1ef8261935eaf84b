"""Several training processes as one model (gloo, on the CPU): the epoch shared out so that every
pair comes once and every process steps in lockstep; N processes equal one process accumulating
N batches; stops, kills and resumption with another number of processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tinytrans.checkpoint import read_checkpoint, read_state, training_checkpoints
from tinytrans.cli import app
from tinytrans.config import DataConfig
from tinytrans.distributed import (Ranks, epoch_plan, even_batches, my_share,
                                   ranks_from_environment, seed_dropout)
from tinytrans.errors import UserError
from tinytrans.hardware import set_threads
from tinytrans.prepared import prepare
from tinytrans.train import train
from toyrun import toy_config, write_corpus

# ---------------------------------------------------------------------------------------------
# Sharing an epoch's batches


@st.composite
def epochs(draw) -> list[np.ndarray]:
    """A shuffled partition of range(n) into batches of 1 to 6 pairs."""
    n = draw(st.integers(1, 80))
    order = np.random.default_rng(draw(st.integers(0, 1000))).permutation(n)
    sizes = draw(st.lists(st.integers(1, 6), min_size=n, max_size=n))
    cuts = np.cumsum(sizes)
    return np.split(order, cuts[cuts < n])


def each_pair_once(batches: list[np.ndarray], n: int) -> bool:
    return sorted(np.concatenate(batches).tolist()) == list(range(n))


@settings(max_examples=200, deadline=None)
@given(batches=epochs(), multiple=st.integers(1, 8))
def test_even_batches_divide_into_updates_and_keep_every_pair_once(batches, multiple):
    n = sum(len(b) for b in batches)
    needed = -len(batches) % multiple
    if needed > n - len(batches):  # not enough pairs to split off
        with pytest.raises(UserError, match="processes x update_freq"):
            even_batches(batches, multiple)
        return
    evened = even_batches(batches, multiple)
    assert len(evened) % multiple == 0 and each_pair_once(evened, n)
    assert all(len(b) > 0 for b in evened)
    # only the end of the epoch changes, in order, and only by splitting batches
    kept = next((i for i, (a, b) in enumerate(zip(evened, batches)) if a.tolist() != b.tolist()),
                len(batches))
    assert np.concatenate(evened[kept:] + [np.zeros(0, int)]).tolist() == \
        np.concatenate(batches[kept:] + [np.zeros(0, int)]).tolist()
    batch_of = {int(pair): i for i, b in enumerate(batches) for pair in b}
    assert all(len({batch_of[int(pair)] for pair in piece}) == 1 for piece in evened)
    if all(len(b) >= 2 for b in batches):  # each split adds one batch: the fewest are split
        assert kept >= len(batches) - needed


@settings(max_examples=100, deadline=None)
@given(batches=epochs(), before=st.integers(1, 4), after=st.integers(1, 4), data=st.data())
def test_an_epoch_regrouped_for_other_processes_still_holds_every_pair_once(batches, before,
                                                                             after, data):
    """A run with `before` batches per update stops after some updates and resumes with
    `after`: what it had trained on stays, the rest is shared among the new processes."""
    n = sum(len(b) for b in batches)
    if n - len(batches) < -len(batches) % before:
        return  # too few pairs to split off (refused, see above)
    first = epoch_plan(batches, [[0, before]])
    position = before * data.draw(st.integers(0, len(first) // before))
    rest = first[position:]
    if sum(len(b) - 1 for b in rest) < -len(rest) % after:
        with pytest.raises(UserError, match="batch-tokens"):
            epoch_plan(batches, [[0, before], [position, after]])
        return
    plan = epoch_plan(batches, [[0, before], [position, after]])
    assert [b.tolist() for b in plan[:position]] == [b.tolist() for b in first[:position]]
    assert (len(plan) - position) % after == 0 and each_pair_once(plan, n)


def test_each_process_takes_its_slice_of_an_update():
    group = [np.array([i]) for i in range(6)]  # 3 processes x update_freq 2
    shares = [my_share(group, Ranks(3, rank)) for rank in range(3)]
    assert [[int(b[0]) for b in share] for share in shares] == [[0, 1], [2, 3], [4, 5]]
    assert my_share(group, Ranks()) == group  # one process with update_freq 6 sees them all


def test_ranks_come_from_torchrun_variables():
    assert ranks_from_environment({}) == Ranks(1, 0, 0)
    assert ranks_from_environment({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == Ranks(4, 3, 1)
    with pytest.raises(UserError, match="RANK=4"):
        ranks_from_environment({"WORLD_SIZE": "4", "RANK": "4", "LOCAL_RANK": "0"})
    with pytest.raises(UserError, match="WORLD_SIZE='two'"):
        ranks_from_environment({"WORLD_SIZE": "two", "RANK": "0", "LOCAL_RANK": "0"})


def test_processes_other_than_0_drop_their_own_units_repeatably():
    def draw(rank: int, step: int) -> torch.Tensor:
        torch.manual_seed(123)  # the generator a checkpoint restored
        seed_dropout(1, Ranks(2, rank), step)
        return torch.rand(8)

    assert torch.equal(draw(0, 5), draw(0, 6))  # process 0 keeps its own generator
    assert not torch.equal(draw(1, 5), draw(0, 5))
    assert not torch.equal(draw(1, 5), draw(1, 6))
    assert torch.equal(draw(1, 5), draw(1, 5))  # the same masks again after a resume


# ---------------------------------------------------------------------------------------------
# Processes: started here, joined with gloo through torchrun's environment variables

@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("distributed")
    train_prefix = write_corpus(root / "train", 400)
    valid_prefix = write_corpus(root / "valid", 20, "valid")
    prepare(DataConfig(train=str(train_prefix), valid=str(valid_prefix), vocab_size=300),
            root / "data", workers=1)
    return root / "data"


def prepared_config(prepared: Path, **train_overrides):
    cfg = toy_config(Path("unused"), None, **train_overrides)
    # no dropout: the comparison with one process must not depend on random masks
    return replace(cfg, data=DataConfig(prepared=str(prepared)),
                   model=replace(cfg.model, dropout=0.0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_processes(world_size: int, cfg, run_dir: Path, errors: Path) -> list:
    """`world_size` processes running train(cfg, run_dir), as torchrun would start them;
    each writes its UserError, if any, to errors/RANK."""
    # forkserver: each process forks from a fresh server, not from this test process, whose
    # threads (OpenMP, earlier tests') can leave a forked child hung on a lock held at the fork
    port, context = free_port(), multiprocessing.get_context("forkserver")
    processes = []
    for rank in range(world_size):
        env = {"WORLD_SIZE": str(world_size), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        process = context.Process(target=_train_as, args=(env, cfg, run_dir, errors / str(rank)))
        process.start()
        processes.append(process)
    return processes


def _train_as(env: dict[str, str], cfg, run_dir: Path, error_file: Path) -> None:
    os.environ.update(env)
    # as `tinytrans train` sets it for its process (the library leaves the thread count alone)
    set_threads(cfg.train.threads)
    try:
        train(cfg, run_dir)
    except UserError as error:
        error_file.parent.mkdir(parents=True, exist_ok=True)
        error_file.write_text(str(error))
        sys.exit(2)


def join(processes: list, timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(deadline - time.monotonic(), 0.1))
    hung = [p for p in processes if p.is_alive()]
    for process in hung:
        process.kill()
    assert not hung, "a training process did not end"
    return [p.exitcode for p in processes]


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == kind]


def test_two_processes_equal_one_accumulating_two_batches_across_a_resume(prepared, tmp_path):
    """2 processes x update_freq 1, stopped at step 2 and resumed to 4, give the weights of one
    process with update_freq 2 trained straight to step 4: same batches, same normalisation."""
    two = tmp_path / "two"
    for max_steps in (2, 4):
        cfg = prepared_config(prepared, max_steps=max_steps, checkpoint_every=2, validate_every=2)
        assert join(start_processes(2, cfg, two, tmp_path / "errors")) == [0, 0]
    one = tmp_path / "one"
    train(prepared_config(prepared, max_steps=4, checkpoint_every=2, validate_every=2,
                          update_freq=2), one)

    final = [read_checkpoint(run / "checkpoints" / "step-0000004.safetensors")[0] for run in (two, one)]
    for name, tensor in final[1].items():
        if name.startswith(("model/", "optim/")):
            torch.testing.assert_close(final[0][name], tensor, rtol=1e-4, atol=1e-6, msg=name)
    # process 0 alone wrote the metrics: every step once, and what the processes were
    assert [r["step"] for r in records(two, "log")] == [1, 2, 3, 4]
    assert [r["loss"] for r in records(two, "log")] == pytest.approx(
        [r["loss"] for r in records(one, "log")], rel=1e-5)
    assert [r["step"] for r in records(two, "valid")] == [2, 4]
    starts = records(two, "start")
    assert [(s["step"], s["processes"], s["effective_batch_tokens"]) for s in starts] == \
        [(0, 2, 1200), (2, 2, 1200)]
    assert records(one, "start")[0]["effective_batch_tokens"] == 1200


def test_a_killed_process_ends_the_others_with_an_error(prepared, tmp_path):
    run_dir = tmp_path / "run"
    cfg = prepared_config(prepared, max_steps=100_000, checkpoint_every=100_000,
                          validate_every=100_000)
    processes = start_processes(2, cfg, run_dir, tmp_path / "errors")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
            (run_dir / "metrics.jsonl").is_file() and len(records(run_dir, "log")) >= 2):
        time.sleep(0.05)
    os.kill(processes[1].pid, signal.SIGKILL)  # as the kernel's OOM killer would
    assert join(processes[:1], timeout=60) == [2]  # an error, within a bounded time
    assert "lost contact with the others" in (tmp_path / "errors" / "0").read_text()
    processes[1].join()


# ---------------------------------------------------------------------------------------------
# torchrun itself, through the command line

TOY_TOML = ('[model]\nd_model = 32\nn_heads = 2\nd_ff = 64\nn_encoder_layers = 1\n'
            'n_decoder_layers = 1\n[train]\nbatch_tokens = 600\nlog_every = 1\n'
            'checkpoint_every = 100000\nvalidate_every = 100000\nthreads = 1\n')


@pytest.mark.slow
def test_ctrl_c_under_torchrun_stops_every_process_at_one_step_then_one_process_resumes(
        prepared, tmp_path):
    run_dir, config = tmp_path / "run", tmp_path / "toy.toml"
    config.write_text(TOY_TOML)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command = torchrun + ["-m", "tinytrans", "train", "--data", str(prepared), "--config",
                          str(config), "--output", str(run_dir), "--max-steps", "100000"]
    # its own process group, as a terminal makes one: Ctrl-C reaches torchrun and every process
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (
            (run_dir / "metrics.jsonl").is_file() and len(records(run_dir, "log")) >= 3):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=90)
    steps = [r["step"] for r in records(run_dir, "log")]
    assert steps == list(range(1, steps[-1] + 1)), stderr  # each update logged once
    # one checkpoint, at the step where every process stopped (a process that went on alone
    # would have waited for the others forever)
    assert [p.name for p in training_checkpoints(run_dir)] == [f"step-{steps[-1]:07d}.safetensors"]
    # each process saw the Ctrl-C (twice: from the terminal and from torchrun) and none aborted;
    # torchrun itself then ends with its own SignalException
    assert stderr.count("stopping after this update") == 2 and "error: " not in stderr

    # the same command without torchrun: one process resumes where the two stopped
    result = CliRunner().invoke(app, ["train", "--output", str(run_dir), "--max-steps",
                                      str(steps[-1] + 3), "--quiet"])
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in records(run_dir, "log")] == list(range(1, steps[-1] + 4))
    starts = records(run_dir, "start")
    assert [s["processes"] for s in starts] == [2, 1]
    # the effective batch is kept: the one process accumulates the two processes' batches
    assert [s["update_freq"] for s in starts] == [1, 2]
    assert starts[0]["effective_batch_tokens"] == starts[1]["effective_batch_tokens"]
    state = read_state(training_checkpoints(run_dir)[-1])
    assert state["step"] == steps[-1] + 3
    assert state["update_sizes"][-1][1] == 2  # two batches per update, as before the resume
