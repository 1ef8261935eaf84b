"""SentencePiece training and the text <-> ids step."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import sentencepiece as spm
from conftest import SMALL_VOCAB, head, write_lines

from tinytrans.errors import UserError
from tinytrans.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    Tokenizer,
    reservoir_sample,
    seed_sampling,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def few_lines(tmp_path_factory: pytest.TempPathFactory, bundled: Path) -> Path:
    """400 English lines of the bundled corpus: enough for vocabularies of a few hundred."""
    path = tmp_path_factory.mktemp("few") / "few.en"
    return write_lines(path, head(bundled / "train.en", 400))


# ---------------------------------------------------------------------------------------------
# The trained joint model

@pytest.mark.parametrize("lang", ["en", "de"])
def test_decode_encode_round_trips_bundled_test_sentences(small_tokenizer: Tokenizer,
                                                          bundled: Path, lang: str) -> None:
    lines = head(bundled / f"test.{lang}", 1000)
    ids = small_tokenizer.encode(lines)
    assert all(UNK_ID not in sentence for sentence in ids)
    assert small_tokenizer.decode(ids) == lines
    assert small_tokenizer.decode_pieces(small_tokenizer.encode_pieces(lines)) == lines


def test_sampled_segmentations_spell_the_same_text_and_follow_the_seed(small_tokenizer: Tokenizer,
                                                                       bundled: Path) -> None:
    lines = head(bundled / "test.de", 200)
    best = small_tokenizer.encode(lines)
    samples = []
    for seed in (7, 7, 8):
        seed_sampling(seed)
        samples.append(small_tokenizer.encode(lines, sampling_alpha=0.1))
    assert samples[0] == samples[1]  # the same seed, the same segmentations
    assert samples[0] != samples[2] and samples[0] != best
    for sample in samples:
        assert small_tokenizer.decode(sample) == lines  # only the split differs, never the text
    # BPE-dropout skips merges: the sampled segmentations have more pieces than the best one
    assert sum(map(len, samples[0])) > sum(map(len, best))
    assert small_tokenizer.encode(lines) == best  # without sampling, always the best


def test_reserved_ids_are_pad_unk_bos_eos(small_tokenizer: Tokenizer) -> None:
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    sp = small_tokenizer.sp
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert small_tokenizer.vocab_size == SMALL_VOCAB


def test_encode_adds_no_bos_or_eos(small_tokenizer: Tokenizer) -> None:
    [ids] = small_tokenizer.encode(["The man plays."])
    assert ids and min(ids) > EOS_ID
    assert small_tokenizer.encode([""]) == [[]]


def test_unknown_characters_map_to_unk(small_tokenizer: Tokenizer) -> None:
    [ids] = small_tokenizer.encode(["漢字"])
    assert UNK_ID in ids


def test_model_and_vocab_files_are_written(small_tokenizer_prefix: Path,
                                           small_tokenizer: Tokenizer) -> None:
    vocab = Path(f"{small_tokenizer_prefix}.vocab").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == SMALL_VOCAB
    entries = [line.split("\t") for line in vocab]
    assert all(len(entry) == 2 for entry in entries)
    pieces = [small_tokenizer.sp.id_to_piece(i) for i in range(SMALL_VOCAB)]
    assert [piece for piece, _ in entries] == pieces
    assert [float(score) for _, score in entries[4:]] == pytest.approx(
        [small_tokenizer.sp.get_score(i) for i in range(4, SMALL_VOCAB)], rel=1e-5)


def test_saved_model_loads_to_the_same_tokenizer(small_tokenizer: Tokenizer,
                                                 tmp_path: Path) -> None:
    small_tokenizer.save(tmp_path / "copy.model")
    copy = Tokenizer.load(tmp_path / "copy.model")
    lines = ["A woman reads a book.", "Die Frau liest ein Buch."]
    assert copy.encode(lines) == small_tokenizer.encode(lines)
    assert copy.model_proto == small_tokenizer.model_proto


# ---------------------------------------------------------------------------------------------
# Training options

def _scores(prefix: Path) -> list[float]:
    lines = Path(f"{prefix}.vocab").read_text(encoding="utf-8").splitlines()
    return [float(line.split("\t")[1]) for line in lines[4:]]


def test_bpe_and_unigram_models_are_both_trained(few_lines: Path, tmp_path: Path) -> None:
    bpe = train_tokenizer([few_lines], tmp_path / "bpe", 200, "bpe")
    unigram = train_tokenizer([few_lines], tmp_path / "unigram", 200, "unigram")
    line = head(few_lines, 1)
    for tok in (bpe, unigram):
        assert tok.vocab_size == 200
        assert tok.decode(tok.encode(line)) == line
    # BPE pieces are scored by merge rank (0, -1, -2, ...); unigram pieces by log-probability.
    assert all(score == int(score) for score in _scores(tmp_path / "bpe"))
    assert not all(score == int(score) for score in _scores(tmp_path / "unigram"))


def test_training_reads_gzip_input(few_lines: Path, tmp_path: Path) -> None:
    import gzip
    packed = tmp_path / "few.en.gz"
    packed.write_bytes(gzip.compress(few_lines.read_bytes()))
    plain = train_tokenizer([few_lines], tmp_path / "plain", 150)
    zipped = train_tokenizer([packed], tmp_path / "zipped", 150)
    assert zipped.model_proto == plain.model_proto


def test_max_sentences_training_is_deterministic_for_a_seed(few_lines: Path,
                                                            tmp_path: Path) -> None:
    first = train_tokenizer([few_lines], tmp_path / "a", 150, max_sentences=100, seed=3)
    again = train_tokenizer([few_lines], tmp_path / "b", 150, max_sentences=100, seed=3)
    assert first.model_proto == again.model_proto
    line = head(few_lines, 1)
    assert first.decode(first.encode(line)) == line


def test_max_sentences_limits_the_training_text(tmp_path: Path) -> None:
    # 200 lines, each a word of its own letter pair; a sample of 5 lines can only hold the
    # characters of 5 of them, so most letters must be unknown to the model trained on it.
    letters = "abcdefghijklmnopqrst"
    words = [a + b for a in letters for b in letters][:200]
    path = write_lines(tmp_path / "words.txt", [f"{w} {w}{w}" for w in words])
    full = train_tokenizer([path], tmp_path / "full", 60)
    sampled = train_tokenizer([path], tmp_path / "sampled", 16, max_sentences=5)
    alphabet = list(letters)
    assert all(UNK_ID not in ids for ids in full.encode(alphabet))
    assert sum(UNK_ID in ids for ids in sampled.encode(alphabet)) >= 10


def test_max_sentences_must_be_positive(few_lines: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--max-sentences"):
        train_tokenizer([few_lines], tmp_path / "t", 150, max_sentences=0)


# ---------------------------------------------------------------------------------------------
# Reservoir sampling

def test_reservoir_returns_k_distinct_items_of_the_stream() -> None:
    items = [f"line {i}" for i in range(1000)]
    sample = reservoir_sample(iter(items), 50, seed=7)
    assert len(sample) == 50
    assert len(set(sample)) == 50
    assert set(sample) <= set(items)


def test_reservoir_returns_everything_when_the_stream_is_short() -> None:
    items = ["a", "b", "c"]
    assert sorted(reservoir_sample(iter(items), 10, seed=1)) == items
    assert reservoir_sample(iter([]), 10, seed=1) == []


def test_reservoir_is_deterministic_for_a_seed() -> None:
    items = [str(i) for i in range(500)]
    assert reservoir_sample(items, 20, seed=5) == reservoir_sample(items, 20, seed=5)
    assert reservoir_sample(items, 20, seed=5) != reservoir_sample(items, 20, seed=6)


def test_reservoir_sample_is_uniform() -> None:
    n, k, trials = 100, 10, 2000
    counts: Counter[str] = Counter()
    for seed in range(trials):
        counts.update(reservoir_sample((str(i) for i in range(n)), k, seed))
    expected = trials * k / n  # 200; binomial standard deviation about 13.4
    assert all(abs(counts[str(i)] - expected) < 60 for i in range(n))
    early = sum(counts[str(i)] for i in range(n // 4))
    late = sum(counts[str(i)] for i in range(n - n // 4, n))
    assert abs(early - late) < 0.1 * expected * n / 4


# ---------------------------------------------------------------------------------------------
# Errors

def test_vocab_size_too_large_for_the_text_is_a_user_error(few_lines: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--vocab-size 50000"):
        train_tokenizer([few_lines], tmp_path / "t", 50000)
    assert not Path(f"{tmp_path / 't'}.model").exists()


def test_tiny_vocab_size_is_a_user_error(few_lines: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--vocab-size"):
        train_tokenizer([few_lines], tmp_path / "t", 4)


@pytest.mark.parametrize("coverage", [0.5, 1.5])
def test_character_coverage_out_of_range_is_a_user_error(few_lines: Path, tmp_path: Path,
                                                         coverage: float) -> None:
    with pytest.raises(UserError, match="--character-coverage"):
        train_tokenizer([few_lines], tmp_path / "t", 100, character_coverage=coverage)


def test_unknown_model_type_is_a_user_error(few_lines: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="wordpiece"):
        train_tokenizer([few_lines], tmp_path / "t", 100, model_type="wordpiece")


@pytest.mark.parametrize("max_sentences", [None, 10])
@pytest.mark.parametrize("lines", [[], ["", "   ", "\t"]], ids=["no-lines", "blank-lines"])
def test_empty_input_is_a_user_error(tmp_path: Path, lines: list[str], max_sentences) -> None:
    path = write_lines(tmp_path / "empty.txt", lines)
    with pytest.raises(UserError, match="no non-empty lines") as error:
        train_tokenizer([path], tmp_path / "t", 100, max_sentences=max_sentences)
    assert str(path) in str(error.value)


def test_missing_input_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="absent.txt"):
        train_tokenizer([tmp_path / "absent.txt"], tmp_path / "t", 100)


def test_invalid_utf8_in_training_text_names_file_and_line(few_lines: Path, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.txt", head(few_lines, 20) + [b"bad \xff byte"])
    with pytest.raises(UserError) as error:
        train_tokenizer([path], tmp_path / "t", 100)
    assert f"{path}:21:" in str(error.value)


@pytest.mark.parametrize("content", [b"this is not a model\n", b"\x00\x01\x02garbage" * 10],
                         ids=["text", "binary"])
def test_loading_a_non_sentencepiece_file_is_a_user_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.model"
    path.write_bytes(content)
    with pytest.raises(UserError, match="not a SentencePiece model") as error:
        Tokenizer.load(path)
    assert str(path) in str(error.value)


def test_loading_a_missing_model_or_a_directory_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such tokenizer model"):
        Tokenizer.load(tmp_path / "absent.model")
    with pytest.raises(UserError, match="directory"):
        Tokenizer.load(tmp_path)


def test_a_model_with_other_reserved_ids_is_a_user_error(few_lines: Path, tmp_path: Path) -> None:
    # SentencePiece's own defaults: unk=0, bos=1, eos=2, no pad.
    spm.SentencePieceTrainer.train(input=str(few_lines), model_prefix=str(tmp_path / "foreign"),
                                   vocab_size=100, minloglevel=2)
    with pytest.raises(UserError, match="pad/unk/bos/eos"):
        Tokenizer.load(tmp_path / "foreign.model")
