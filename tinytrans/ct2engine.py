"""Translation with CTranslate2's C++ engine, from a model `tinytrans export` wrote.

The same line handling as the PyTorch engine (lines.LineTranslator: chunks, sentence splitting,
one Translation per line), with CTranslate2 doing the search, target prefixes (--prefix)
included. Nothing here imports torch, so a process that translates with this engine starts
faster and stays smaller.

The segments are sorted by length and cut into batches by lines.LineTranslator, as for the
PyTorch engine, so that each batch's output length limit follows its own longest source.

What it does not do, and says so in one line before any work: constraints and glossaries
(CTranslate2 has prefixes, not lexical constraints), word alignments, and sampling (CTranslate2
seeds each of its worker threads once, when it first draws, so a --seed could not reproduce
its samples). Its output length limit is one per batch (a x the batch's longest source + b +
the batch's longest prefix), where the PyTorch engine limits each sentence by its own length
and prefix: the two can differ on sentences that reach the limit. CTranslate2 scores a
hypothesis without its prefix's log-probabilities, tinytrans with them, and cannot make the
piece after a prefix that ends with a space begin a new word (search_loop.NewWord).

The export directory holds, besides CTranslate2's model files, the run's tokenizer(s) and
EXPORT_INFO: the language pair and maximum source length the run was trained with.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from tinytrans.config import SearchConfig
from tinytrans.directions import Direction, Directions, parse_directions
from tinytrans.errors import UserError
from tinytrans.lines import LineOptions, LineTranslator, Segment
from tinytrans.tokenizer import Tokenizer, tokenizer_names

EXPORT_INFO = "tinytrans.json"


@dataclass
class Found:
    tokens: list[int]  # target piece ids
    score: float  # CTranslate2's score: the log-probability normalised by length^lenpen


def read_export_info(model_dir: Path) -> dict:
    """The export's EXPORT_INFO, checked field by field (an untrusted file)."""
    path = model_dir / EXPORT_INFO
    if not (model_dir / "model.bin").is_file():
        hint = (f"; export it first: tinytrans export --model {model_dir} --output DIR, then "
                "--model DIR") if (model_dir / "config.toml").is_file() else ""
        raise UserError(f"--model {model_dir}: not a CTranslate2 model directory (no model.bin)"
                        f"{hint}")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: missing; this export is older than --engine ctranslate2: "
                        "export the run again") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: unreadable ({error})") from None
    expected = {"src": str, "tgt": str, "max_length": int, "joint_vocab": bool}
    if not isinstance(info, dict):
        raise UserError(f"{path}: expected a JSON object")
    for key, kind in expected.items():
        if type(info.get(key)) is not kind:  # exactly: True is no max_length
            raise UserError(f"{path}: '{key}' must be a {kind.__name__}")
    if info["max_length"] < 1:
        raise UserError(f"{path}: 'max_length' must be at least 1")
    if type(info.get("directions", "")) is not str:  # an export older than them has none
        raise UserError(f"{path}: 'directions' must be a str")
    return info


def export_directions(info: dict, path: Path) -> Directions:
    """The directions of an export (its run's: see rundir.run_directions)."""
    if info.get("directions"):
        return Directions(parse_directions(info["directions"], f"{path}: 'directions'"), True)
    return Directions((Direction(info["src"], info["tgt"]),), tagged=False)


def check_vocabularies(model_dir: Path, src_tok: Tokenizer, tgt_tok: Tokenizer) -> None:
    """CTranslate2's vocabulary files must list the tokenizers' pieces, in id order: another
    export's file (or tokenizer) would crash CTranslate2 or, worse, give fluent wrong text."""
    shared = (model_dir / "shared_vocabulary.json").exists()  # CTranslate2 writes one if equal
    files = [("shared_vocabulary.json", src_tok), ("shared_vocabulary.json", tgt_tok)] if shared \
        else [("source_vocabulary.json", src_tok), ("target_vocabulary.json", tgt_tok)]
    for name, tokenizer in files:
        path = model_dir / name
        try:
            listed = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{path}: missing; export the run again") from None
        except (OSError, ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
            raise UserError(f"{path}: unreadable ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:80]})") from None
        if listed != tokenizer.pieces():
            raise UserError(f"{path}: its {_count(listed)} pieces are not those of "
                            f"{tokenizer.name} ({tokenizer.vocab_size}): the vocabulary and the "
                            "tokenizer come from different runs; export the run again")


def _count(listed: object) -> str:
    return f"{len(listed):,}" if isinstance(listed, list) else "(not a list)"


class CT2Translator(LineTranslator):
    """An exported model loaded into CTranslate2 for translation."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", threads: int | None = None):
        try:
            import ctranslate2
        except ImportError:
            raise UserError("--engine ctranslate2 needs ctranslate2, which is not installed "
                            "(pip install 'tinytrans[export]')") from None
        self.ctranslate2 = ctranslate2
        model_dir = Path(model_dir)
        info = read_export_info(model_dir)
        loaded = [Tokenizer.load(model_dir / name) for name in tokenizer_names(info["joint_vocab"])]
        src_tok, tgt_tok = (loaded[0], loaded[0]) if len(loaded) == 1 else loaded
        check_vocabularies(model_dir, src_tok, tgt_tok)
        super().__init__(src_tok, tgt_tok, info["max_length"],
                         export_directions(info, model_dir / EXPORT_INFO), model_dir)
        self.precision = "int8" if info.get("quantization") == "int8" else "fp32"
        device = "cuda" if device == "cuda" else "cpu"  # auto: the CPU, where this engine shines
        torch = sys.modules.get("torch")  # loaded by someone else: its thread count is theirs
        torch_threads = torch.get_num_threads() if torch is not None else None
        try:
            self.engine = ctranslate2.Translator(str(model_dir), device=device,
                                                 intra_threads=threads or 0)
        except (RuntimeError, ValueError) as error:
            raise UserError(f"--model {model_dir}: CTranslate2 cannot load it "
                            f"({str(error).splitlines()[0]})") from None
        finally:
            # CTranslate2 sets OpenMP's thread count on the calling thread, which is PyTorch's
            # too; the library changes nothing process-wide, so it is put back
            if torch_threads is not None:
                torch.set_num_threads(torch_threads)

    def check_supported(self, cfg: SearchConfig, options: LineOptions, constrained: bool) -> None:
        check_supported(cfg, options, constrained)

    def search_batch(self, batch: list[Segment], cfg: SearchConfig, options: LineOptions) -> None:
        """One batch searched by CTranslate2, with the length limit of its longest source."""
        pieces = [self.src_tok.sp.id_to_piece(s.source.tolist()) for s in batch]
        prefixes = [self.tgt_tok.sp.id_to_piece(list(s.prefix)) for s in batch]
        longest = max(len(p) for p in pieces)
        # the PyTorch engine's limit (search_loop.run_search), for the batch's longest source
        # and prefix: CTranslate2 takes one limit per batch
        limit = int(cfg.max_len_a * longest + cfg.max_len_b) + max(map(len, prefixes)) + 1
        results = self.engine.translate_batch(
            pieces, beam_size=cfg.beam, num_hypotheses=cfg.nbest, length_penalty=cfg.lenpen,
            return_scores=True, max_decoding_length=limit,
            target_prefix=prefixes if any(prefixes) else None)
        for segment, result in zip(batch, results):
            segment.found = [Found(self.tgt_tok.sp.piece_to_id(hyp), score)
                             for hyp, score in zip(result.hypotheses, result.scores)]


def check_supported(cfg: SearchConfig, options: LineOptions, constrained: bool) -> None:
    if cfg.sampling:
        raise UserError("--engine ctranslate2: cannot reproduce samples from a --seed; use "
                        "--engine torch for --sample")
    if constrained or options.glossary is not None:
        raise UserError("--engine ctranslate2: has no lexical constraints; use --engine torch "
                        "for --constraints and --glossary")
    if options.alignment:
        raise UserError("--engine ctranslate2: gives no alignments; use --engine torch for "
                        "--alignment")
