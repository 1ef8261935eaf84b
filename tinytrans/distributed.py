"""Several training processes as one model: who each process is, how they talk, how they share
each epoch's batches.

`torchrun --nproc-per-node N -m tinytrans train ...` starts N copies of the command and tells
each one who it is through environment variables: WORLD_SIZE (N, times the machines), RANK (0 ..
WORLD_SIZE-1, over all machines) and LOCAL_RANK (0 .. N-1 on this machine, which picks its GPU).
They join one torch.distributed process group (gloo on CPUs, NCCL on CUDA GPUs), and
DistributedDataParallel (DDP) sums their gradients after every backward pass, so every process
takes the same optimizer step and holds the same weights.

Every process plans the same epoch from the seed (data.length_sorted_batches) and takes its own
share of each update's batches, so every kept pair is used once per epoch and every process makes
the same number of updates: none waits for a batch that never comes (see `even_batches`).

Without torchrun (no WORLD_SIZE) there is one process, and every function here does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tinytrans.errors import UserError
from tinytrans.hardware import pick_device

# How long a process waits in a collective for the others before it gives up with an error. The
# other processes wait while process 0 validates, so this bounds a validation, too. A process
# that dies is noticed at once (its connections close), and torchrun stops the others as well.
TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    world_size: int = 1  # processes in all, on all machines
    rank: int = 0  # this process, 0 .. world_size - 1; process 0 validates and writes
    local_rank: int = 0  # this process on its machine: its GPU

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


ONE_PROCESS = Ranks()


def ranks_from_environment(environ: dict[str, str] | None = None) -> Ranks:
    """The Ranks torchrun (or any launcher using its variables) gave this process."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return ONE_PROCESS
    values = {}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        text = environ.get(name, "0")
        if not text.strip().isdigit():
            raise UserError(f"environment variable {name}={text!r}: should be a whole number "
                            "(it is set by torchrun)")
        values[name] = int(text)
    ranks = Ranks(values["WORLD_SIZE"], values["RANK"], values["LOCAL_RANK"])
    if not 0 <= ranks.rank < ranks.world_size or ranks.world_size < 1:
        raise UserError(f"environment variables RANK={ranks.rank}, WORLD_SIZE={ranks.world_size}: "
                        "RANK must lie in 0 .. WORLD_SIZE-1")
    return ranks


def process_device(requested: str, ranks: Ranks) -> torch.device:
    """The device of this process: its own GPU (cuda:LOCAL_RANK) or the CPU."""
    device = pick_device(requested)
    if device.type != "cuda":
        return device
    if ranks.local_rank >= torch.cuda.device_count():
        raise UserError(f"LOCAL_RANK {ranks.local_rank}: this machine has only "
                        f"{torch.cuda.device_count()} CUDA GPU(s); start fewer processes per node")
    device = torch.device("cuda", ranks.local_rank)
    torch.cuda.set_device(device)
    return device


@contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[None]:
    """Join the other processes for the duration of the block (nothing to join for one)."""
    if not ranks.distributed:
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    with backend_errors_as_user_errors(ranks):
        dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world_size,
                                timeout=TIMEOUT,
                                device_id=device if device.type == "cuda" else None)
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextmanager
def backend_errors_as_user_errors(ranks: Ranks) -> Iterator[None]:
    """Errors of the process group (another process died, a timeout) as one line: the last
    checkpoint is intact, and the command can be run again."""
    try:
        yield
    except RuntimeError as error:  # DistError is one; DDP's reducer raises gloo's as plain ones
        if not (ranks.distributed and _from_the_backend(error)):
            raise
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"training process {ranks.rank} of {ranks.world_size}: lost contact with "
                        f"the others ({first[:200]}); the last checkpoint is intact, run the same "
                        "command again to resume") from None


def _from_the_backend(error: RuntimeError) -> bool:
    text = str(error).lower()
    return isinstance(error, dist.DistError) or "gloo" in text or "nccl" in text


def wrap(module: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """`module` whose backward passes sum gradients over all processes (DDP), or `module` alone.

    Only what runs inside the wrapped module's forward is synchronised, which is why training
    wraps its whole loss computation (objective.TeacherForcing), not the Transformer.
    """
    if not ranks.distributed:
        return module
    with backend_errors_as_user_errors(ranks):  # DDP starts by copying process 0's weights to all
        return DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None)


def sum_over_ranks(values: Sequence[float | torch.Tensor], ranks: Ranks,
                   device: torch.device) -> list[float]:
    """Each value summed over all processes (one all_reduce for all of them)."""
    if not ranks.distributed:
        return [float(v) for v in values]
    # float64: token counts of millions stay exact; NCCL needs the tensor on this process's GPU
    tensor = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).detach()
                          for v in values])
    with backend_errors_as_user_errors(ranks):
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def any_rank(flag: bool, ranks: Ranks, device: torch.device) -> bool:
    """True on every process when it is true on at least one (a Ctrl-C seen by any of them)."""
    return sum_over_ranks([float(flag)], ranks, device)[0] > 0


def process_0_says(flag: bool, ranks: Ranks, device: torch.device) -> bool:
    """Process 0's `flag`, on every process (what only process 0 knows: time, patience)."""
    return sum_over_ranks([float(flag and ranks.main)], ranks, device)[0] > 0


def barrier(ranks: Ranks) -> None:
    """Wait until every process gets here (process 0 has prepared the run directory)."""
    if ranks.distributed:
        with backend_errors_as_user_errors(ranks):
            dist.barrier()


# ---------------------------------------------------------------------------------------------
# Sharing an epoch's batches

def even_batches(batches: list[np.ndarray], multiple: int) -> list[np.ndarray]:
    """`batches` with the last ones split until their number is a multiple of `multiple`.

    Training makes updates of `multiple` batches (processes x update_freq); an epoch whose count
    does not divide would end with an update some process has no batch for, and that process
    would wait for the others' gradients forever. Splitting a batch keeps every pair exactly once
    and never makes a batch larger (each part has fewer pairs, none longer); only the end of the
    epoch is touched, so the batches before are those of any other number of processes.
    """
    needed = -len(batches) % multiple
    if needed == 0:
        return batches
    kept, tail = len(batches), []
    while needed:
        kept -= 1
        if kept < 0:  # fewer pairs than batches wanted: almost every batch holds one pair
            pairs = sum(len(b) for b in batches)
            raise UserError(f"{len(batches)} batches of {pairs} pairs cannot be split into a "
                            f"multiple of {multiple} (processes x update_freq): "
                            "use a larger --batch-tokens, fewer processes or a smaller update_freq")
        parts = min(len(batches[kept]), needed + 1)  # a batch of n pairs splits into at most n
        tail = np.array_split(batches[kept], parts) + tail
        needed -= parts - 1
    return batches[:kept] + tail


def epoch_plan(batches: list[np.ndarray], regrouped: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """An epoch's batches as they are trained on.

    `regrouped` lists (position, batches per update): from each position on, the rest of the
    epoch was evened out for that many batches per update. A run starts its epochs with
    [(0, processes x update_freq)]; one resumed mid-epoch with another number of processes adds
    its own entry, so the batches already trained on keep their order and the rest are shared
    among the new number of processes: every pair still comes once in the epoch.
    """
    plan = batches
    for position, multiple in regrouped:
        plan = plan[:position] + even_batches(plan[position:], multiple)
    return plan


def my_share(group: list[np.ndarray], ranks: Ranks) -> list[np.ndarray]:
    """This process's batches of one update's `group` (ranks x update_freq batches): process r
    takes the r-th slice, so one process with update_freq N sees what N processes see together."""
    per_rank = len(group) // ranks.world_size
    return group[ranks.rank * per_rank: (ranks.rank + 1) * per_rank]


def seed_dropout(seed: int, ranks: Ranks, step: int) -> None:
    """Give processes 1.. their own dropout masks for this update.

    All processes start from the same seed (the same initial weights); left so, they would drop
    the same units of their batches. Process 0 keeps the generator saved in the checkpoint, as a
    single process does; the others draw theirs from (seed, rank, step), so that a resumed run
    repeats the same masks.
    """
    if ranks.rank > 0:
        seeds = np.random.SeedSequence([seed, ranks.rank, step])
        torch.manual_seed(int(seeds.generate_state(1)[0]))
