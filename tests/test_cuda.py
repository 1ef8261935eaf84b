"""The GPU path: the same model, search and training on a CUDA device as on the CPU.

Skipped without CUDA (this whole file); bench/gpu_check.sh runs it first on a GPU machine. The
CPU is the reference: fp32 on the GPU (TF32 off) must give the CPU's numbers to float tolerance,
bf16 must train, and nothing may assume the CPU (masks, position tables, caches, search state).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from helpers_model import (OVERFIT_SOURCES, OVERFIT_TARGETS, overfit_model, random_sources,  # noqa: E402
                           source_batch, teacher_forcing_batch, toy_model)

from tinytrans.checkpoint import load_model_weights, training_checkpoints  # noqa: E402
from tinytrans.config import DataConfig, SearchConfig  # noqa: E402
from tinytrans.data import make_batch  # noqa: E402
from tinytrans.model import padding_mask  # noqa: E402
from tinytrans.prepared import open_prepared, prepare  # noqa: E402
from tinytrans.rundir import load_run_config  # noqa: E402
from tinytrans.search import beam_search, greedy_search  # noqa: E402
from tinytrans.train import make_optimizer, to_device, train  # noqa: E402
from toyrun import toy_config, write_corpus  # noqa: E402

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 off while comparing with the CPU (training turns it on; it changes the 11th bit)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


def test_forward_on_the_gpu_equals_the_cpu():
    model = toy_model(3)
    src = source_batch(random_sources(1, [5, 2, 8]))
    tgt_in, _ = teacher_forcing_batch(random_sources(2, [4, 6, 3]))
    expected = model(src, tgt_in)
    got = model.to(CUDA)(src.to(CUDA), tgt_in.to(CUDA))
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-4, atol=1e-5)


def test_cached_decoding_on_the_gpu_equals_full_decoding():
    model = toy_model(4).to(CUDA)
    src = source_batch(random_sources(5, [5, 2, 8])).to(CUDA)
    tgt = source_batch(random_sources(6, [6, 6, 6])).to(CUDA)
    with torch.no_grad():
        src_mask = padding_mask(src)
        memory = model.encode(src, src_mask)
        full = model.decode(tgt, memory, src_mask)
        cache = model.new_cache()
        steps = [model.decode(tgt[:, t: t + 1], memory, src_mask, cache) for t in range(tgt.size(1))]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)
    assert all(t.device.type == "cuda" for layer in cache for t in layer.values())


@pytest.mark.parametrize("beam", [1, 5])
def test_search_on_the_gpu_finds_what_the_cpu_finds(beam):
    model = overfit_model()
    src = source_batch(OVERFIT_SOURCES)
    cfg = SearchConfig(beam=beam)
    cpu = greedy_search(model, src, cfg) if beam == 1 else [h[0] for h in beam_search(model, src, cfg)]
    gpu_model = toy_model(0, n_encoder_layers=1, n_decoder_layers=1)
    gpu_model.load_state_dict(model.state_dict())
    gpu_model.to(CUDA)
    gpu = greedy_search(gpu_model, src.to(CUDA), cfg) if beam == 1 else \
        [h[0] for h in beam_search(gpu_model, src.to(CUDA), cfg)]
    assert [h.tokens for h in gpu] == [h.tokens for h in cpu] == OVERFIT_TARGETS
    for g, c in zip(gpu, cpu):
        assert g.score == pytest.approx(c.score, abs=1e-3)


def test_bf16_search_on_the_gpu_still_reproduces_a_learned_mapping():
    model = toy_model(0, n_encoder_layers=1, n_decoder_layers=1)
    model.load_state_dict(overfit_model().state_dict())
    model.to(CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        hyps = beam_search(model, source_batch(OVERFIT_SOURCES).to(CUDA), SearchConfig(beam=5))
    assert [h[0].tokens for h in hyps] == OVERFIT_TARGETS


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cuda")
    prefix = write_corpus(root / "train", 400)
    valid = write_corpus(root / "valid", 20, "valid")
    prepare(DataConfig(train=str(prefix), valid=str(valid), vocab_size=300), root / "data", workers=1)
    return root / "data"


def test_batches_reach_the_gpu_from_pinned_memory(prepared):
    corpus = open_prepared(prepared).train
    batch = make_batch(corpus, [0, 1, 2])
    moved = to_device(batch, CUDA)
    torch.cuda.synchronize()
    assert moved.src.device.type == "cuda" and torch.equal(moved.tgt_out.cpu(), batch.tgt_out)


def test_bf16_training_on_the_gpu_with_fused_adam(prepared, tmp_path):
    cfg = toy_config(Path("unused"), None, max_steps=8, validate_every=4, checkpoint_every=4,
                     device="cuda", precision="bf16")
    cfg = replace(cfg, data=DataConfig(prepared=str(prepared)))
    result = train(cfg, tmp_path / "run")
    assert result.state.step == 8 and torch.isfinite(torch.tensor(result.last_validation["loss"]))
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text()
                                     .splitlines()) if r["event"] == "log"]
    assert losses[-1] < losses[0]
    # the checkpoint is plain CPU tensors: it loads without a GPU
    from tinytrans.model import Transformer
    load_model_weights(training_checkpoints(tmp_path / "run")[-1],
                       Transformer(load_run_config(tmp_path / "run").model))
    model = Transformer(load_run_config(tmp_path / "run").model).to(CUDA)
    assert make_optimizer(model, cfg, CUDA).defaults["fused"] is True


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_train_together_under_torchrun_with_nccl(prepared, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               "2", "-m", "tinytrans", "train", "--data", str(prepared), "--output",
               str(tmp_path / "run"), "--preset", "tiny", "--device", "cuda", "--max-steps", "6",
               "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    start = next(r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text()
                                .splitlines()) if r["event"] == "start")
    assert start["processes"] == 2 and start["device"] == "cuda:0"
