"""Translate a file with CTranslate2, as a user of an exported tinytrans model would.

    python bench/ct2_translate.py CT2_DIR INPUT OUTPUT BEAM THREADS

Pieces from the exported tokenizer.model, CTranslate2's beam search (batches of ~12,000 source
tokens x beam, as tinytrans' default; length penalty 1; output length at most 1.5 x the longest
source + 10, where tinytrans limits each sentence by its own length), detokenized text out.
bench/decode_speed.py times this whole process.
"""

from __future__ import annotations

import sys

import ctranslate2
import sentencepiece as spm


def main() -> None:
    model_dir, source, target, beam, threads = sys.argv[1:6]
    beam, threads = int(beam), int(threads)
    sp = spm.SentencePieceProcessor(model_file=f"{model_dir}/tokenizer.model")
    with open(source, encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for line in handle]
    pieces = sp.encode([line.strip() for line in lines], out_type=str)
    engine = ctranslate2.Translator(model_dir, device="cpu", intra_threads=threads)
    longest = max(len(p) for p in pieces) + 1
    results = engine.translate_batch(
        pieces, beam_size=beam, length_penalty=1.0, max_batch_size=12000 // beam,
        batch_type="tokens", max_decoding_length=int(1.5 * longest + 10) + 1)
    with open(target, "w", encoding="utf-8") as handle:
        for result in results:
            handle.write(sp.decode(result.hypotheses[0]) + "\n")


if __name__ == "__main__":
    main()
