"""The encoder-decoder Transformer (Vaswani et al., 2017), from PyTorch primitives.

Read top to bottom as the paper draws it: positional encoding, masks, attention, feed-forward,
the residual wrapper, encoder layer, decoder layer, and the model that joins them. This module
knows nothing of strings or files: ids in, hidden states and logits out.

Shape legend:
    B  batch size (sentences; at search time sentences x beams)
    S  source length        T  target length (1 per step when decoding with a cache)
    D  d_model              H  n_heads          Dh = D / H, the size of one head
    F  d_ff                 V  vocabulary size
Masks are boolean with one convention: True = this query may attend to this key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tinytrans.config import ModelConfig
from tinytrans.tokenizer import PAD_ID


# A search step's self-attention uses PyTorch's fused kernel for up to this many rows (one or two
# sentences' beams), where its lower fixed cost wins, and batched_attention for more, where the
# fused CPU kernel was up to 2.5 times slower (RESULTS.md, "Attention in a search step").
FUSED_ATTENTION_ROWS = 16


@dataclass
class LayerCache:
    """What one decoder layer has computed during a search, reused at the next step.

    Empty at the first step; the layer fills it. t is the number of target positions so far.
    """

    self_k: torch.Tensor | None = None  # (B, H, t, Dh) self-attention keys, one more per step
    self_v: torch.Tensor | None = None  # (B, H, t, Dh) and values
    cross_k: torch.Tensor | None = None  # (B, H, S, Dh) cross-attention keys, from the memory once
    cross_v: torch.Tensor | None = None  # (B, H, S, Dh) and values
    cross_bias: torch.Tensor | None = None  # (B, H, 1, S) the source mask as added scores (step)

    @property
    def length(self) -> int:
        """t: the target positions decoded so far."""
        return 0 if self.self_k is None else self.self_k.size(2)

    def append_self(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this step's keys and values (B, H, T, Dh); returns all of them, (B, H, t + T, Dh)."""
        if self.self_k is not None:
            k, v = torch.cat([self.self_k, k], dim=2), torch.cat([self.self_v, v], dim=2)
        self.self_k, self.self_v = k, v
        return k, v

    def reorder(self, rows: torch.Tensor, sources: torch.Tensor | None = None) -> None:
        """Keep (and repeat) the target rows in `rows`, and the sources (the cross-attention's
        entries) in `sources`; None leaves the sources alone, as when beams are re-ranked within
        their sentences. During a search the two differ: all rows of a sentence read one source."""
        if self.self_k is not None:
            self.self_k = self.self_k.index_select(0, rows)
            self.self_v = self.self_v.index_select(0, rows)
        if sources is not None and self.cross_k is not None:
            self.cross_k = self.cross_k.index_select(0, sources)
            self.cross_v = self.cross_v.index_select(0, sources)
        if sources is not None and self.cross_bias is not None:
            self.cross_bias = self.cross_bias.index_select(0, sources)


@dataclass
class AttentionWeights:
    """Attention weights recorded during a pass of the model: one tensor per layer, bottom first.

    Pass an empty one as `weights_out` to `encode` and `decode` and each attention layer appends
    its weights (after the softmax, masked positions 0) to the list of its kind. Rows are queries,
    columns keys; every row sums to 1.
    """

    encoder: list[torch.Tensor] = field(default_factory=list)  # (B, H, S, S) source self-attention
    decoder: list[torch.Tensor] = field(default_factory=list)  # (B, H, T, t) target self-attention
    cross: list[torch.Tensor] = field(default_factory=list)  # (B, H, T, S) target to source


def sinusoidal_encoding(length: int, d_model: int, offset: int = 0,
                        device: torch.device | None = None) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/D)), PE(pos, 2i+1) = cos(pos / 10000^(2i/D)).

    Computed on the fly for positions offset .. offset+length-1, so no input is ever too long for
    a fixed table. Returns (length, D).
    """
    position = torch.arange(offset, offset + length, device=device, dtype=torch.float32)[:, None]
    two_i = torch.arange(0, d_model, 2, device=device, dtype=torch.float32)
    angle = position / torch.pow(10000.0, two_i / d_model)  # (length, D/2)
    encoding = torch.empty(length, d_model, device=device)
    encoding[:, 0::2] = torch.sin(angle)
    encoding[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return encoding


def padding_mask(ids: torch.Tensor) -> torch.Tensor:
    """(B, L) ids -> (B, 1, 1, L): every query may attend to every key that is not padding."""
    return (ids != PAD_ID)[:, None, None, :]


def causal_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, 1, L, L): position i may attend to positions 0..i only, never to the future."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()[None, None]


def mask_as_scores(mask: torch.Tensor, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, 1, S) bool mask -> (B, H, 1, S) scores to add before the softmax: 0 where a key
    may be attended to, -inf where not (a softmax gives those weight 0)."""
    scores = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    return scores.expand(-1, heads, -1, -1).contiguous()


def batched_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      added: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(Q K^T / sqrt(Dh) + added) V as batched matrix products, every head of every row
    one matrix: q (B, H, Tq, Dh), k, v (B, H, Tk, Dh), `added` (B, H, 1, Tk) (mask_as_scores)
    -> (B, H, Tq, Dh). The scaling and the mask ride in the first product (torch.baddbmm).
    For a search step's few queries per row this beat PyTorch's fused kernel on a CPU at most
    sizes (RESULTS.md, "Attention in a search step"). Inference only: no dropout, no weights.
    """
    B, H, Tq, Dh = q.shape
    Tk = k.size(2)
    q3, k3 = q.reshape(B * H, Tq, Dh), k.reshape(B * H, Tk, Dh).transpose(1, 2)
    if added is None:
        scores = torch.bmm(q3, k3).mul_(Dh ** -0.5)  # (B * H, Tq, Tk)
    else:
        scores = torch.baddbmm(added.reshape(B * H, 1, Tk), q3, k3, alpha=Dh ** -0.5)
    return torch.bmm(scores.softmax(dim=-1), v.reshape(B * H, Tk, Dh)).view(B, H, Tq, Dh)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              dropout: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T / sqrt(Dh)) V, written out; returns the output and the attention weights.

    The model calls the fused F.scaled_dot_product_attention instead (same maths, less memory)
    and uses this when the weights themselves are wanted; a search step calls batched_attention.
    q: (B, H, Tq, Dh), k, v: (B, H, Tk, Dh).
    """
    # scale by sqrt(Dh) so the softmax stays out of its flat region (Vaswani et al. §3.2.1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    if dropout:  # a call even with p = 0 costs a search step several microseconds per layer
        weights = F.dropout(weights, p=dropout)
    return weights @ v, weights  # (B, H, Tq, Dh), (B, H, Tq, Tk)


class Dropout(nn.Module):
    """Zero each element with probability p while training and scale the rest by 1 / (1 - p), so
    the expected value is unchanged (Srivastava et al., 2014).

    Same as nn.Dropout, but the mask comes from one random byte per element, four bytes to each
    32-bit draw of the generator, so p is rounded to a multiple of 1/256 (0.1 -> 26/256 =
    0.1016). F.dropout draws every element from a Bernoulli sampler, which on a CPU cost about
    15% of a training step with dropout on residuals and FFN activations (about 10x more than
    this mask: bench/RESULTS.md, "dropout masks").
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep_below = round((1.0 - self.p) * 256)  # a byte below this keeps its element
        words = torch.empty((x.numel() + 3) // 4, dtype=torch.int32, device=x.device)
        # random_(low, high) covers all 32 bits evenly; random_() alone leaves the top bit 0
        random_bytes = words.random_(-2**31, 2**31 - 1).view(torch.uint8)[: x.numel()]
        keep = random_bytes.view(x.shape) < keep_below
        return torch.where(keep, x * (256.0 / keep_below), 0.0)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MultiHeadAttention(nn.Module):
    """H heads of scaled dot-product attention, concatenated and projected by W^O.

    Self-attention projects Q, K and V with one fused matrix; cross-attention projects Q from
    the decoder and K, V from the encoder's memory.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, cross: bool):
        super().__init__()
        self.n_heads, self.dropout, self.cross = n_heads, dropout, cross
        if cross:
            self.q_proj = nn.Linear(d_model, d_model)
            self.kv_proj = nn.Linear(d_model, 2 * d_model)
        else:
            self.qkv_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        return x.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2)  # (B, H, L, Dh)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, causal: bool = False,
                cache: LayerCache | None = None,
                weights_out: list[torch.Tensor] | None = None) -> torch.Tensor:
        """x: (B, T, D) queries; memory: (B, S, D) for cross-attention. Returns (B, T, D).

        With `cache`, keys and values of earlier steps are reused: self-attention appends this
        step's, cross-attention computes the memory's once. `causal` applies the causal mask
        (not needed when decoding one step at a time: the past is all there is). With
        `weights_out`, the attention weights (B, H, T, keys) are appended to it.
        """
        q, k, v = self.project(x, memory, cache)
        dropout = self.dropout if self.training else 0.0
        if weights_out is not None:
            full_mask = causal_mask(q.size(2), x.device) if causal else mask
            out, weights = attention(q, k, v, full_mask, dropout)
            weights_out.append(weights)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                 is_causal=causal)
        B, H, T, Dh = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, T, H * Dh))  # (B, T, D)

    def step(self, x: torch.Tensor, memory: torch.Tensor | None, mask: torch.Tensor | None,
             cache: LayerCache) -> torch.Tensor:
        """`forward` for one new target position of each row, with its cache: x (R, D) -> (R, D).

        The same maths in fewer operations: a search runs this for every token it writes, with
        so few rows that each operation's fixed cost outweighs its arithmetic. Sub-modules are
        called through `forward`, which skips nn.Module's hook machinery (microseconds a call).
        The attention itself is batched_attention, or PyTorch's fused kernel for few rows (see
        FUSED_ATTENTION_ROWS): the fused CPU kernel, built for long sequences, was slower for a
        batch's many short ones (RESULTS.md, "Attention in a search step").
        """
        R, D = x.shape
        H, Dh = self.n_heads, D // self.n_heads
        if self.cross:  # the G rows of each source (its beams) query it together
            k, v = self.memory_keys(memory, cache)  # (M, H, S, Dh): M sources, R = M * G rows
            M = k.size(0)
            G = R // M
            if cache.cross_bias is None and mask is not None:
                cache.cross_bias = mask_as_scores(mask, H, x.dtype)  # (M, H, 1, S)
            q = self.q_proj.forward(x).view(M, G, H, Dh).transpose(1, 2)  # (M, H, G, Dh)
            out = batched_attention(q, k, v, cache.cross_bias)  # (M, H, G, Dh)
            return self.out_proj.forward(out.transpose(1, 2).reshape(R, D))
        q, k, v = self.qkv_proj.forward(x).view(R, 3, H, 1, Dh).unbind(1)  # q, k, v by views of one product
        k, v = cache.append_self(k, v)  # (R, H, t + 1, Dh); no mask: the past is all there is
        if R <= FUSED_ATTENTION_ROWS:  # one sentence's beams: the fused kernel's fixed cost is lower
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = batched_attention(q, k, v)  # (R, H, 1, Dh)
        return self.out_proj.forward(out.view(R, D))

    def project(self, x: torch.Tensor, memory: torch.Tensor | None,
                cache: LayerCache | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.cross:
            return (self.split_heads(self.q_proj(x)), *self.memory_keys(memory, cache))
        q, k, v = map(self.split_heads, self.qkv_proj(x).chunk(3, dim=-1))  # (B, H, T, Dh) each
        if cache is not None:
            k, v = cache.append_self(k, v)  # (B, H, t + T, Dh)
        return q, k, v

    def memory_keys(self, memory: torch.Tensor,
                    cache: LayerCache | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention's keys and values of the memory (B, S, D): (B, H, S, Dh) each,
        computed once and kept in the cache when there is one."""
        if cache is not None and cache.cross_k is not None:
            return cache.cross_k, cache.cross_v
        k, v = map(self.split_heads, self.kv_proj(memory).chunk(2, dim=-1))
        if cache is not None:  # contiguous, so that a search step can view them as M * H matrices
            k, v = cache.cross_k, cache.cross_v = k.contiguous(), v.contiguous()
        return k, v


class FeedForward(nn.Module):
    """Position-wise FFN(x) = W2 ReLU(W1 x + b1) + b2, widening D to F and back."""

    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.w1, self.w2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.dropout(F.relu(self.w1(x))))  # (B, L, F) inside, (B, L, D) out

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` while searching (no dropout): (R, D) -> (R, D)."""
        return self.w2.forward(F.relu(self.w1.forward(x)))


class Residual(nn.Module):
    """A sub-layer with its residual connection and LayerNorm, written once for all of them.

    Pre-norm, x + f(LN(x)), keeps an unnormalised path from input to output and trains stably
    without a long warmup (Xiong et al., 2020); post-norm, LN(x + f(x)), is the original paper's.
    """

    def __init__(self, d_model: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, sublayer) -> torch.Tensor:
        return self.around(x, lambda h: self.dropout(sublayer(h)))

    def around(self, x: torch.Tensor, sublayer_output) -> torch.Tensor:
        """The residual connection and LayerNorm around `sublayer_output`: `forward` without its
        dropout, which a search step calls to skip the dropout module's call."""
        if self.pre_norm:
            return x + sublayer_output(self.norm.forward(x))
        return self.norm.forward(x + sublayer_output(x))


class EncoderLayer(nn.Module):
    """Self-attention over the source, then the feed-forward block."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cross=False)
        self.feed_forward = FeedForward(cfg.d_model, cfg.d_ff, cfg.activation_dropout)
        self.attn_residual = Residual(cfg.d_model, cfg.dropout, cfg.pre_norm)
        self.ff_residual = Residual(cfg.d_model, cfg.dropout, cfg.pre_norm)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor,
                weights_out: AttentionWeights | None = None) -> torch.Tensor:
        record = weights_out.encoder if weights_out is not None else None
        x = self.attn_residual(x, lambda h: self.self_attn(h, mask=src_mask, weights_out=record))
        return self.ff_residual(x, self.feed_forward)  # (B, S, D)


class DecoderLayer(nn.Module):
    """Masked self-attention over the target so far, cross-attention to the source, feed-forward."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cross=False)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cross=True)
        self.feed_forward = FeedForward(cfg.d_model, cfg.d_ff, cfg.activation_dropout)
        self.self_residual = Residual(cfg.d_model, cfg.dropout, cfg.pre_norm)
        self.cross_residual = Residual(cfg.d_model, cfg.dropout, cfg.pre_norm)
        self.ff_residual = Residual(cfg.d_model, cfg.dropout, cfg.pre_norm)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
                cache: LayerCache | None = None,
                weights_out: AttentionWeights | None = None) -> torch.Tensor:
        # Decoding one step at a time, the past is all there is to attend to: no causal mask.
        causal = x.size(1) > 1
        assert not (causal and cache is not None and cache.length), "a filled cache takes one token per step"
        self_record = weights_out.decoder if weights_out is not None else None
        cross_record = weights_out.cross if weights_out is not None else None
        x = self.self_residual(x, lambda h: self.self_attn(
            h, causal=causal, cache=cache, weights_out=self_record))
        x = self.cross_residual(x, lambda h: self.cross_attn(
            h, memory, mask=src_mask, cache=cache, weights_out=cross_record))
        return self.ff_residual(x, self.feed_forward)  # (B, T, D)

    def step(self, x: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
             cache: LayerCache) -> torch.Tensor:
        """`forward` for one new position of each row while searching: x (R, D) -> (R, D)."""
        x = self.self_residual.around(x, lambda h: self.self_attn.step(h, None, None, cache))
        x = self.cross_residual.around(x, lambda h: self.cross_attn.step(h, memory, src_mask, cache))
        return self.ff_residual.around(x, self.feed_forward.step)


class StepOutputMatrix:
    """The output matrix (V, D) laid out for a search step's few rows: logits = states W^T.

    F.linear reads the (V, D) matrix across its rows, slow for a handful of states. On a CPU in
    fp32, where PyTorch carries oneDNN, the matrix is reordered once into oneDNN's own blocked
    layout and multiplied by oneDNN's linear (as PyTorch's compiler does for inference): 5 rows
    in 127 instead of 276 microseconds, 160 rows 1.1 times as fast, a lone row 0.84 times (V
    8,000, D 128, one thread, AMD EPYC; RESULTS.md, "Decoder step: the output layer read three
    ways"). Elsewhere (a GPU, bf16) a (D, V) copy read along its rows, which on an Intel Xeon
    took 180 instead of F.linear's 382 microseconds.
    """

    def __init__(self, weight: torch.Tensor):
        self.weight = weight  # (V, D)
        self.onednn = (weight.device.type == "cpu" and weight.dtype == torch.float32
                       and torch.backends.mkldnn.is_available())
        if self.onednn:
            try:  # an operator of PyTorch's compiler, not of its public API: a build may lack it
                self.copy = torch.ops.mkldnn._reorder_linear_weight(weight)  # oneDNN's layout
                return
            except (AttributeError, RuntimeError):
                self.onednn = False
        self.copy = weight.t().contiguous()  # (D, V)

    def times(self, states: torch.Tensor) -> torch.Tensor:
        """(R, D) -> (R, V)."""
        if states.dtype != self.weight.dtype:  # autocast's states: the plain product
            return F.linear(states, self.weight)
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise(states, self.copy, None, "none", [], "")
        return states @ self.copy


class Transformer(nn.Module):
    """Encoder-decoder Transformer. `encode` once per batch, `decode` once per step (or once per
    batch with teacher forcing), `logits` on the decoder states that need a prediction."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.tie_embeddings:
            # One matrix embeds source and target tokens and scores outputs (Press & Wolf, 2017).
            self.embedding = nn.Embedding(cfg.src_vocab_size, cfg.d_model, padding_idx=PAD_ID)
            self.output_projection: nn.Module | None = None  # logits use self.embedding.weight
        else:
            self.src_embedding = nn.Embedding(cfg.src_vocab_size, cfg.d_model, padding_idx=PAD_ID)
            self.tgt_embedding = nn.Embedding(cfg.tgt_vocab_size, cfg.d_model, padding_idx=PAD_ID)
            self.output_projection = nn.Linear(cfg.d_model, cfg.tgt_vocab_size, bias=False)
        self.encoder_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_decoder_layers))
        # Pre-norm leaves the residual stream unnormalised, so each stack ends with a LayerNorm.
        self.encoder_norm = nn.LayerNorm(cfg.d_model) if cfg.pre_norm else nn.Identity()
        self.decoder_norm = nn.LayerNorm(cfg.d_model) if cfg.pre_norm else nn.Identity()
        self.dropout = Dropout(cfg.dropout)
        # for step_logits: (the output matrix it was copied from, the copy)
        self._step_output: tuple[tuple, StepOutputMatrix | None] = ((), None)
        self._position_table: torch.Tensor | None = None  # for positions
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, parameter in self.named_parameters():
            if "embedding" in name or "output_projection" in name:
                # N(0, D^-1/2): scaled by sqrt(D) on input the embeddings have unit variance, and
                # the tied output layer starts with small logits (as fairseq does).
                nn.init.normal_(parameter, mean=0.0, std=self.cfg.d_model ** -0.5)
            elif parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
            elif name.endswith("bias"):
                nn.init.zeros_(parameter)
        for embedding in (self.src_embed_table, self.tgt_embed_table):
            with torch.no_grad():
                embedding.weight[PAD_ID].zero_()

    @property
    def src_embed_table(self) -> nn.Embedding:
        return self.embedding if self.cfg.tie_embeddings else self.src_embedding

    @property
    def tgt_embed_table(self) -> nn.Embedding:
        return self.embedding if self.cfg.tie_embeddings else self.tgt_embedding

    def embed(self, table: nn.Embedding, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Token embeddings scaled by sqrt(D) plus positions offset.. (Vaswani et al. §3.4)."""
        positions = self.positions(offset, ids.size(1), ids.device)  # (L, D)
        return self.dropout(table(ids) * math.sqrt(self.cfg.d_model) + positions)  # (B, L, D)

    def positions(self, offset: int, length: int, device: torch.device) -> torch.Tensor:
        """Positional encodings of positions offset..offset+length-1, (length, D): rows of a table
        computed once and grown when a longer input comes (a search step would otherwise
        compute its one row afresh, with half a dozen small operations)."""
        table = self._position_table
        if table is None or table.size(0) < offset + length or table.device != device:
            size = max(offset + length, 2 * (table.size(0) if table is not None else 128))
            table = self._position_table = sinusoidal_encoding(size, self.cfg.d_model, 0, device)
        return table[offset: offset + length]

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor,
               weights_out: AttentionWeights | None = None) -> torch.Tensor:
        """src: (B, S) ids, src_mask: (B, 1, 1, S) -> memory: (B, S, D).

        With `weights_out`, each layer appends its self-attention weights (B, H, S, S).
        """
        x = self.embed(self.src_embed_table, src)
        for layer in self.encoder_layers:
            x = layer(x, src_mask, weights_out)
        return self.encoder_norm(x)

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
               cache: list[LayerCache] | None = None,
               weights_out: AttentionWeights | None = None) -> torch.Tensor:
        """tgt: (B, T) ids -> decoder states (B, T, D).

        With `cache` (one LayerCache per layer, empty at the first step), `tgt` holds only the
        newest token(s) and earlier keys/values come from the cache, which this call extends.
        With `weights_out`, each layer appends its self-attention weights (B, H, T, t), t the
        positions so far, and its cross-attention weights (B, H, T, S).
        """
        offset = cache[0].length if cache else 0
        x = self.embed(self.tgt_embed_table, tgt, offset)
        for i, layer in enumerate(self.decoder_layers):
            x = layer(x, memory, src_mask, cache[i] if cache is not None else None, weights_out)
        return self.decoder_norm(x)

    def decode_step(self, last: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
                    cache: list[LayerCache]) -> torch.Tensor:
        """One search step: each row's newest token, last (R,) ids -> decoder states (R, D).

        `memory` (M, S, D) and `src_mask` (M, 1, 1, S) hold each source once, and the rows come
        in M blocks of G = R / M rows, block m reading source m: the K beams of a sentence attend
        to its source together, K times fewer products than one per row (G = 1 is one per row).

        The same as decode(last[:, None], memory, src_mask, cache)[:, -1] with the memory
        repeated for every row, in fewer operations and module calls (MultiHeadAttention.step
        says why): one sentence's beam search took 11% less time (RESULTS.md, "Decoding in one
        process against CTranslate2"). Inference only: no dropout, no attention weights.
        """
        offset = cache[0].length
        table = self.tgt_embed_table.weight
        x = F.embedding(last, table) * math.sqrt(self.cfg.d_model) + self.positions(offset, 1, last.device)
        for layer, layer_cache in zip(self.decoder_layers, cache):
            x = layer.step(x, memory, src_mask, layer_cache)  # (R, D)
        return self.decoder_norm.forward(x)

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """Decoder states (..., D) -> unnormalised scores over the target vocabulary (..., V)."""
        if self.output_projection is None:
            return F.linear(states, self.embedding.weight)
        return self.output_projection(states)

    def train(self, mode: bool = True) -> Transformer:
        """Training or evaluation mode, as nn.Module's; either way the copy of the output
        matrix (step_logits) is dropped: a fused optimizer (Adam's fused=True, which training
        uses) changes the weights without counting their versions, so a copy kept across
        updates would be stale. Validation turns eval() on after every round of updates."""
        self._step_output = ((), None)
        return super().train(mode)

    def step_logits(self, states: torch.Tensor) -> torch.Tensor:
        """(R, D) states of one search step -> (R, V) logits: `logits`, read the fast way.

        For a search step's few rows, the product is bound by reading the (V, D) output matrix,
        which F.linear reads across; StepOutputMatrix keeps a copy laid out for reading (why and
        how much faster: there). The copy is made once and kept while the matrix is unchanged: a
        tensor's version counts its in-place updates (an optimizer step), its storage its
        replacement. It costs the matrix's memory again.
        A quantised output layer (int8) has its own kernel, and weights made under
        torch.inference_mode() keep no version: those are multiplied by `logits` as they are.
        """
        projection = self.output_projection
        if projection is not None and not (isinstance(projection, nn.Linear) and projection.bias is None):
            return self.logits(states)
        weight = self.embedding.weight if projection is None else projection.weight
        if weight.is_inference():
            return self.logits(states)
        key = (weight.data_ptr(), weight._version, weight.device, weight.dtype)
        if self._step_output[0] != key:
            self._step_output = (key, StepOutputMatrix(weight.detach()))
        return self._step_output[1].times(states)  # (R, V)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits for every target position: (B, S), (B, T) -> (B, T, V)."""
        src_mask = padding_mask(src)
        return self.logits(self.decode(tgt, self.encode(src, src_mask), src_mask))

    def new_cache(self) -> list[LayerCache]:
        return [LayerCache() for _ in self.decoder_layers]


def reorder_cache(cache: list[LayerCache], rows: torch.Tensor, sources: torch.Tensor | None = None) -> None:
    """Keep (and repeat) the target rows in `rows` and the sources in `sources`, in place: beams
    re-ranked or sentences done. Without `sources` the cross-attention keys/values stay as they
    are: re-ranking beams within a sentence does not change what they attend to. Outside a
    search, where each row has its own source, pass the same index for both.
    """
    for layer in cache:
        layer.reorder(rows, sources)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
