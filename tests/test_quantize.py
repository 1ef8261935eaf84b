"""int8 dynamic quantisation for CPU decoding: close to fp32, and only where it can run."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from tinytrans.cli import app
from tinytrans.config import ModelConfig
from tinytrans.errors import UserError
from tinytrans.hardware import pick_precision
from tinytrans.model import Transformer
from tinytrans.quantize import quantize_dynamic_int8
from tinytrans.config import SearchConfig
from tinytrans.search import beam_search
from test_translate import run_dir  # noqa: F401  (the toy run fixture)


@pytest.mark.parametrize("tied", [True, False])
def test_quantized_model_stays_close_to_fp32(tied: bool):
    torch.manual_seed(0)
    cfg = ModelConfig(src_vocab_size=40, tgt_vocab_size=40, d_model=64, n_heads=4, d_ff=128,
                      n_encoder_layers=2, n_decoder_layers=2, dropout=0.0, tie_embeddings=tied)
    model = Transformer(cfg).eval()
    src, tgt = torch.randint(4, 40, (3, 9)), torch.randint(4, 40, (3, 7))
    with torch.no_grad():
        reference = model(src, tgt).log_softmax(-1)
        quantized = quantize_dynamic_int8(model)
        approx = quantized(src, tgt).log_softmax(-1)
    assert isinstance(quantized.output_projection, torch.ao.nn.quantized.dynamic.Linear)
    assert (approx - reference).abs().max() < 0.1
    hyps = beam_search(quantized, src, SearchConfig(beam=3))
    assert len(hyps) == 3 and all(h for h in hyps)


@pytest.mark.parametrize("tied", [True, False])
def test_quantizing_leaves_the_given_model_unchanged(tied: bool):
    torch.manual_seed(0)
    cfg = ModelConfig(src_vocab_size=40, tgt_vocab_size=40, d_model=32, n_heads=2, d_ff=64,
                      n_encoder_layers=1, n_decoder_layers=1, dropout=0.0, tie_embeddings=tied)
    model = Transformer(cfg).eval()
    src, tgt = torch.randint(4, 40, (2, 6)), torch.randint(4, 40, (2, 5))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with torch.no_grad():
        reference = model(src, tgt)
        quantize_dynamic_int8(model)
        after = model(src, tgt)
    assert (model.output_projection is None) == tied
    assert all(type(m) is not torch.ao.nn.quantized.dynamic.Linear for m in model.modules())
    assert model.state_dict().keys() == before.keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert torch.equal(after, reference)


def test_int8_is_for_cpu_inference_only():
    assert pick_precision("int8", torch.device("cpu"), inference=True).precision == "int8"
    with pytest.raises(UserError, match="CPU only"):
        pick_precision("int8", torch.device("cuda"), inference=True)
    with pytest.raises(UserError, match="--precision"):
        pick_precision("int8", torch.device("cpu"))  # training


def test_cli_translates_with_int8(run_dir):  # noqa: F811
    result = CliRunner().invoke(app, ["translate", "--model", str(run_dir), "--precision", "int8"],
                                input="The man buys a red car.\n\nWhere is the dog?\n")
    assert result.exit_code == 0, result.output
    lines = result.stdout.split("\n")[:-1]
    assert len(lines) == 3 and lines[1] == "" and lines[0] and lines[2]
    assert "Warning" not in result.stderr
