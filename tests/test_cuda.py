"""The device path: the same model, search and training on any device as on the CPU reference.

Every test runs on the CPU, so CI here runs each body and a change that breaks the device path
fails at once, and on a CUDA GPU where there is one (bench/gpu_check.sh runs this file first on a
GPU machine). The CPU is the reference: fp32 on the GPU (TF32 off) must give the CPU's numbers to
float tolerance, bf16 must train, and nothing may assume the CPU (masks, position tables,
caches, search state). Only what exists on a GPU alone (pinned memory, NCCL) is skipped here.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from helpers_model import (OVERFIT_SOURCES, OVERFIT_TARGETS, overfit_model, random_sources,
                           source_batch, teacher_forcing_batch, toy_model)
from tinytrans.checkpoint import load_model_weights, training_checkpoints
from tinytrans.config import DataConfig, SearchConfig
from tinytrans.data import make_batch
from tinytrans.model import Transformer, padding_mask
from tinytrans.prepared import open_prepared, prepare
from tinytrans.rundir import load_run_config
from tinytrans.search import beam_search, greedy_search
from tinytrans.schedule import make_optimizer
from tinytrans.train import to_device, train
from toyrun import toy_config, write_corpus

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 off while comparing with the CPU (training turns it on; it changes the 11th bit)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


def test_forward_on_the_device_equals_the_cpu(device):
    model = toy_model(3)
    src = source_batch(random_sources(1, [5, 2, 8]))
    tgt_in, _ = teacher_forcing_batch(random_sources(2, [4, 6, 3]))
    expected = model(src, tgt_in)
    got = model.to(device)(src.to(device), tgt_in.to(device))
    assert got.device.type == device.type
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-4, atol=1e-5)


def test_cached_decoding_on_the_device_equals_full_decoding(device):
    model = toy_model(4).to(device)
    src = source_batch(random_sources(5, [5, 2, 8])).to(device)
    tgt = source_batch(random_sources(6, [6, 6, 6])).to(device)
    with torch.no_grad():
        src_mask = padding_mask(src)
        memory = model.encode(src, src_mask)
        full = model.decode(tgt, memory, src_mask)
        cache = model.new_cache()
        steps = [model.decode(tgt[:, t: t + 1], memory, src_mask, cache) for t in range(tgt.size(1))]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)
    cached = [getattr(layer, f.name) for layer in cache for f in dataclasses.fields(layer)]
    cached = [t for t in cached if t is not None]  # cross_bias is the search step's alone
    assert len(cached) == 4 * len(cache) and all(t.device.type == device.type for t in cached)


@pytest.mark.parametrize("beam", [1, 5])
def test_search_on_the_device_finds_what_the_cpu_finds(device, beam):
    model = overfit_model()
    src = source_batch(OVERFIT_SOURCES)
    cfg = SearchConfig(beam=beam)
    cpu = greedy_search(model, src, cfg) if beam == 1 else [h[0] for h in beam_search(model, src, cfg)]
    moved = toy_model(0, n_encoder_layers=1, n_decoder_layers=1)
    moved.load_state_dict(model.state_dict())
    moved.to(device)
    found = greedy_search(moved, src.to(device), cfg) if beam == 1 else \
        [h[0] for h in beam_search(moved, src.to(device), cfg)]
    assert [h.tokens for h in found] == [h.tokens for h in cpu] == OVERFIT_TARGETS
    for g, c in zip(found, cpu):
        assert g.score == pytest.approx(c.score, abs=1e-3)


def test_bf16_search_on_the_device_still_reproduces_a_learned_mapping(device):
    model = toy_model(0, n_encoder_layers=1, n_decoder_layers=1)
    model.load_state_dict(overfit_model().state_dict())
    model.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        hyps = beam_search(model, source_batch(OVERFIT_SOURCES).to(device), SearchConfig(beam=5))
    assert [h[0].tokens for h in hyps] == OVERFIT_TARGETS


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cuda")
    prefix = write_corpus(root / "train", 400)
    valid = write_corpus(root / "valid", 20, "valid")
    prepare(DataConfig(train=str(prefix), valid=str(valid), vocab_size=300), root / "data", workers=1)
    return root / "data"


def test_batches_reach_the_device_whole(prepared, device):
    corpus = open_prepared(prepared).train
    batch = make_batch(corpus, [0, 1, 2])
    moved = to_device(batch, device)
    if device.type == "cuda":
        torch.cuda.synchronize()  # the copy from pinned memory does not block
    assert moved.src.device.type == device.type
    for name in ("src", "tgt_in", "tgt_out"):
        assert torch.equal(getattr(moved, name).cpu(), getattr(batch, name))


def test_bf16_training_on_the_device_with_fused_adam(prepared, tmp_path, device):
    cfg = toy_config(Path("unused"), None, max_steps=8, validate_every=4, checkpoint_every=4,
                     device=device.type, precision="bf16", lr=5e-3)
    cfg = replace(cfg, data=DataConfig(prepared=str(prepared)))
    result = train(cfg, tmp_path / "run")
    assert result.state.step == 8 and torch.isfinite(torch.tensor(result.last_validation["loss"]))
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text()
                                     .splitlines()) if r["event"] == "log"]
    assert losses[-1] < losses[0]
    # the checkpoint is plain CPU tensors: it loads without a GPU
    load_model_weights(training_checkpoints(tmp_path / "run")[-1],
                       Transformer(load_run_config(tmp_path / "run").model))
    model = Transformer(load_run_config(tmp_path / "run").model).to(device)
    assert make_optimizer(model, cfg).defaults["fused"] is True


@NEEDS_CUDA
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
