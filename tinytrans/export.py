"""Export a trained run to CTranslate2, the C++ engine many translation services run.

The model is described through ctranslate2's Python spec API (TransformerSpec: encoder and
decoder specs whose variables are filled here) and saved as a model directory:

    OUT/model.bin                 the weights (quantized when asked)
    OUT/config.json               special tokens: source gets </s> appended, decoding starts at <s>
    OUT/shared_vocabulary.json    the SentencePiece pieces in id order (source_/target_ when untied)
    OUT/tokenizer.model           the run's SentencePiece model(s), to make pieces with
    OUT/tinytrans.json            the language pair and the maximum source length (ct2engine)
    OUT/langid.json               the run's language identifier, when it has one (langid.py)

What must agree for CTranslate2 to compute what tinytrans computes:
- positions: CTranslate2 would build its own sinusoidal table with sines and cosines in two
  halves; tinytrans interleaves them (model.py), so tinytrans' own table is exported;
- embeddings scaled by sqrt(d_model) before the positions are added (model.py `embed`);
- fused projections: self-attention Q, K, V in one matrix, cross-attention K, V in one, in
  tinytrans' order; PyTorch's (out, in) weight layout is CTranslate2's too;
- the LayerNorm of each residual block sits with its sub-layer; pre-norm stacks end with a
  final LayerNorm, post-norm ones do not; epsilon is PyTorch's 1e-5;
- tied embeddings: the same matrix for both embeddings and the output layer (CTranslate2
  stores it once, as an alias).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tinytrans.atomic import atomic_directory
from tinytrans.average import resolve_with_average
from tinytrans.checkpoint import load_model_weights
from tinytrans.config import EXPORT_FORMATS as FORMATS
from tinytrans.config import QUANTIZATIONS
from tinytrans.ct2engine import EXPORT_INFO
from tinytrans.errors import UserError
from tinytrans.langid import LANGID_FILE, identifier_in
from tinytrans.model import MultiHeadAttention, Transformer, sinusoidal_encoding
from tinytrans.rundir import check_tokenizers, load_run_config, load_tokenizers, tokenizer_files
from tinytrans.tokenizer import BOS_ID, EOS_ID, UNK_ID, Tokenizer

# CTranslate2 cuts inputs at 1024 tokens and stops decoding at 256 by default; a table of 1024
# positions covers both (it refuses positions past the table's end).
POSITIONS = 1024


def export_model(run_dir: Path, output: Path, fmt: str = "ctranslate2", checkpoint: str = "best",
                 quantization: str | None = None) -> Path:
    """Export one checkpoint of a run to `output` (a new directory) in format `fmt`."""
    if fmt not in FORMATS:
        raise UserError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}")
    return export_ctranslate2(run_dir, output, checkpoint, quantization)


def export_ctranslate2(run_dir: Path, output: Path, checkpoint: str = "best",
                       quantization: str | None = None) -> Path:
    """Write a CTranslate2 model directory; `quantization` as CTranslate2 names it (None: fp32)."""
    ctranslate2 = _import_ctranslate2()
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise UserError(f"--quantization: '{quantization}' is not one of "
                        f"{', '.join(QUANTIZATIONS)}")
    run_dir, output = Path(run_dir), Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UserError(f"{output}: already exists; export writes a new directory")
    config = load_run_config(run_dir)
    model = Transformer(config.model)
    path = resolve_with_average(run_dir, checkpoint)
    src_tok, tgt_tok = load_tokenizers(run_dir, config)
    check_tokenizers(run_dir, config, (src_tok, tgt_tok), path)
    load_model_weights(path, model)
    positions = max(POSITIONS, config.data.max_length + 1)
    spec = transformer_spec(ctranslate2.specs, model.eval(), positions)
    register_vocabularies(spec, src_tok, tgt_tok)
    for path in tokenizer_files(run_dir, config.data.joint_vocab):
        spec.register_file(str(path))
    spec.validate()
    spec.optimize(quantization=quantization)
    info = {"src": config.data.src, "tgt": config.data.tgt, "directions": config.data.directions,
            "max_length": config.data.max_length,
            "joint_vocab": config.data.joint_vocab, "quantization": quantization or "float32",
            "run": str(run_dir.resolve()), "checkpoint": checkpoint}

    identifier = identifier_in(run_dir)

    def save(directory: str) -> None:
        spec.save(directory)
        # what ct2engine needs besides CTranslate2's files: the pair and the source length limit
        (Path(directory) / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n",
                                                  encoding="utf-8")
        if identifier is not None:  # read and checked, then written anew
            identifier.save(Path(directory) / LANGID_FILE)
    write_directory(output, save)
    return output


def _import_ctranslate2():
    try:
        import ctranslate2
        import ctranslate2.specs  # noqa: F401 (the submodule this module fills)
    except ImportError:
        raise UserError("export: needs ctranslate2, which is not installed "
                        "(pip install 'tinytrans[export]')") from None
    return ctranslate2


def transformer_spec(specs, model: Transformer, positions: int):
    """A ctranslate2.specs.TransformerSpec holding `model`'s weights."""
    cfg = model.cfg
    encoder = specs.TransformerEncoderSpec(cfg.n_encoder_layers, cfg.n_heads,
                                           pre_norm=cfg.pre_norm)
    decoder = specs.TransformerDecoderSpec(cfg.n_decoder_layers, cfg.n_heads,
                                           pre_norm=cfg.pre_norm)
    spec = specs.TransformerSpec(encoder, decoder)
    table = array(sinusoidal_encoding(positions, cfg.d_model))  # (positions, D), interleaved
    # the encoder spec has a list of embeddings (for extra input streams); tinytrans has one
    set_stack(encoder, encoder.embeddings[0], model.src_embed_table, table, model.encoder_norm)
    set_stack(decoder, decoder.embeddings, model.tgt_embed_table, table, model.decoder_norm)
    for layer_spec, layer in zip(encoder.layer, model.encoder_layers):
        set_attention(layer_spec.self_attention, layer.self_attn, layer.attn_residual.norm)
        set_feed_forward(layer_spec.ffn, layer)
    for layer_spec, layer in zip(decoder.layer, model.decoder_layers):
        set_attention(layer_spec.self_attention, layer.self_attn, layer.self_residual.norm)
        set_attention(layer_spec.attention, layer.cross_attn, layer.cross_residual.norm)
        set_feed_forward(layer_spec.ffn, layer)
    output = model.embedding if model.output_projection is None else model.output_projection
    decoder.projection.weight = array(output.weight)  # (V, D): logits = states @ W^T
    spec.config.layer_norm_epsilon = model.encoder_layers[0].attn_residual.norm.eps
    return spec


def set_stack(stack_spec, embeddings_spec, embedding: nn.Embedding, table: np.ndarray,
              final_norm: nn.Module) -> None:
    """Embeddings (scaled by sqrt(D) in CTranslate2 as in model.py), positions, final norm."""
    embeddings_spec.weight = array(embedding.weight)
    stack_spec.scale_embeddings = True
    stack_spec.position_encodings.encodings = table
    if isinstance(final_norm, nn.LayerNorm):  # pre-norm only; post-norm has nn.Identity here
        set_norm(stack_spec.layer_norm, final_norm)


def set_attention(spec, attention: MultiHeadAttention, norm: nn.LayerNorm) -> None:
    """Self-attention: linear[0] = fused QKV, linear[1] = W^O. Cross-attention: linear[0] = Q,
    linear[1] = fused KV (from the memory), linear[2] = W^O."""
    projections = [attention.q_proj, attention.kv_proj] if attention.cross else [attention.qkv_proj]
    for linear_spec, linear in zip(spec.linear, projections + [attention.out_proj]):
        set_linear(linear_spec, linear)
    set_norm(spec.layer_norm, norm)


def set_feed_forward(spec, layer: nn.Module) -> None:
    set_linear(spec.linear_0, layer.feed_forward.w1)  # widening, then ReLU (the spec's default)
    set_linear(spec.linear_1, layer.feed_forward.w2)
    set_norm(spec.layer_norm, layer.ff_residual.norm)


def set_linear(spec, linear: nn.Linear) -> None:
    spec.weight = array(linear.weight)
    if linear.bias is not None:
        spec.bias = array(linear.bias)


def set_norm(spec, norm: nn.LayerNorm) -> None:
    spec.gamma, spec.beta = array(norm.weight), array(norm.bias)


def array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(torch.float32).cpu().numpy().copy()


def register_vocabularies(spec, src_tok: Tokenizer, tgt_tok: Tokenizer) -> None:
    """Pieces in id order, and the special tokens by the names the tokenizer gives them."""
    spec.register_source_vocabulary(src_tok.pieces())
    spec.register_target_vocabulary(tgt_tok.pieces())
    piece = tgt_tok.sp.id_to_piece
    spec.config.unk_token, spec.config.bos_token = piece(UNK_ID), piece(BOS_ID)
    spec.config.eos_token, spec.config.decoder_start_token = piece(EOS_ID), piece(BOS_ID)
    spec.config.add_source_eos = True  # tinytrans' sources end with EOS, never start with BOS


def write_directory(output: Path, save) -> None:
    """Let `save(dir)` fill a new directory beside `output`, renamed to `output` when complete:
    a reader (or a run stopped half way) never sees a half-written model."""
    with atomic_directory(output) as tmp:
        save(str(tmp))
