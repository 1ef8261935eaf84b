"""Many directions in one model (directions.py): the tag, the joint tokenizer, sampling by
temperature, validation per direction, routes (trained, pivot, zero-shot, refused), detection,
evaluation, the server, and runs of one pair left as they were.

The toy corpus has three languages: the bundled English and German, and "xx", English with
every word spelt backwards (learnable, and easy to tell apart from English)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tinytrans
from helpers_cli import assert_one_line_error, invoke
from tinytrans.config import build_config
from tinytrans.data import RaggedIds, concatenate, gather, with_tag
from tinytrans.directions import (Direction, Directions, direction_corpora, epoch_sample,
                                  parse_directions, tag_id, tag_piece, temperature_shares)
from tinytrans.errors import UserError
from tinytrans.langid import LANGID_FILE, LanguageIdentifier
from tinytrans.rundir import load_run_config, load_tokenizers
from tinytrans.train import load_multilingual_data, train
from toyrun import BUNDLED

DIRECTIONS = "en-de,de-en,en-xx"


def backwards(line: str) -> str:
    return " ".join(word[::-1] for word in line.split())


def write_three_way(prefix: Path, split: str, n: int) -> Path:
    """PREFIX.en, PREFIX.de and PREFIX.xx: the first n pairs of a bundled split."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    en = (BUNDLED / f"{split}.en").read_text(encoding="utf-8").splitlines()[:n]
    de = (BUNDLED / f"{split}.de").read_text(encoding="utf-8").splitlines()[:n]
    for lang, lines in (("en", en), ("de", de), ("xx", [backwards(x) for x in en])):
        Path(f"{prefix}.{lang}").write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    return prefix


def multilingual_config(train_prefix: str, valid_prefix: str | None, directions: str = DIRECTIONS,
                        **train_overrides):
    return build_config({
        "model": {"d_model": 64, "n_heads": 2, "d_ff": 128, "n_encoder_layers": 1,
                  "n_decoder_layers": 1, "dropout": 0.0},
        "data": {"train": train_prefix, "valid": valid_prefix, "directions": directions,
                 "vocab_size": 400},
        "train": {"batch_tokens": 1500, "lr": 5e-3, "warmup_steps": 30, "max_steps": 120,
                  "validate_every": 60, "checkpoint_every": 60, "threads": 1,
                  "precision": "fp32", **train_overrides},
    }, "toy multilingual")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("three-way")
    return write_three_way(root / "train", "train", 1500), write_three_way(root / "valid", "valid", 20)


@pytest.fixture(scope="module")
def run(corpora, tmp_path_factory) -> Path:
    train_prefix, valid_prefix = corpora
    run_dir = tmp_path_factory.mktemp("multilingual") / "run"
    train(multilingual_config(str(train_prefix), str(valid_prefix)), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def model(run):
    return tinytrans.load(run, device="cpu", precision="fp32", threads=1)


# ---------------------------------------------------------------------------------------------
# Directions, corpora and sampling: the arithmetic


def test_directions_parse_and_their_mistakes_are_named():
    assert parse_directions("en-de, de-en") == (Direction("en", "de"), Direction("de", "en"))
    for text, cause in (("en-de,en-de", "named twice"), ("en-en", "into itself"),
                        ("ende", "not a direction"), ("", "names no direction"),
                        ("en-de-fr", "not a direction")):
        with pytest.raises(UserError, match=cause):
            parse_directions(text)


def test_each_direction_finds_its_corpus():
    directions = parse_directions("en-de,de-en,en-fr")
    assert direction_corpora("data/m30k", directions) == {d: "data/m30k" for d in directions}
    found = direction_corpora("a/x:en-de,b/y:fr-en", directions)
    assert found == {Direction("en", "de"): "a/x", Direction("de", "en"): "a/x",
                     Direction("en", "fr"): "b/y"}
    with pytest.raises(UserError, match="no --train corpus has en and fr"):
        direction_corpora("a/x:en-de", directions)
    with pytest.raises(UserError, match="each need their pair"):
        direction_corpora("a/x:en-de,b/y", directions)


def test_temperature_shares_follow_the_formula():
    shares = temperature_shares([900, 100], 5.0)
    expected = np.array([0.9 ** 0.2, 0.1 ** 0.2])
    np.testing.assert_allclose(shares, expected / expected.sum())
    np.testing.assert_allclose(temperature_shares([900, 100], 1.0), [0.9, 0.1])


def test_an_epoch_draws_each_direction_by_its_share():
    sizes = [900, 100]
    picked = epoch_sample(sizes, 5.0, seed=1, epoch=0)
    counts = [int((picked < 900).sum()), int((picked >= 900).sum())]
    assert sum(counts) == 1000
    assert counts == list(np.rint(temperature_shares(sizes, 5.0) * 1000).astype(int))
    # the small direction is drawn more often than its size: all of it, and a random rest
    small = picked[picked >= 900]
    assert set(small.tolist()) == set(range(900, 1000))
    # the large one less: a subset, another one each epoch, each pair at most once
    large = picked[picked < 900]
    assert len(set(large.tolist())) == len(large)
    assert not np.array_equal(np.sort(large), np.sort(epoch_sample(sizes, 5.0, 1, 1)[:len(large)]))
    assert np.array_equal(picked, epoch_sample(sizes, 5.0, seed=1, epoch=0))  # reproducible
    assert epoch_sample([500, 500], 5.0, 1, 0) is None  # equal directions: every pair once
    assert epoch_sample(sizes, 1.0, 1, 0) is None  # T = 1: the corpus as it is


def test_tags_gathers_and_concatenations_keep_every_sentence():
    ragged = RaggedIds(np.array([5, 6, 7, 8, 9], dtype=np.uint16), np.array([0, 2, 2, 5]))
    tagged = with_tag(ragged, 4)
    assert [tagged[i].tolist() for i in range(3)] == [[4, 5, 6], [4], [4, 7, 8, 9]]
    both = concatenate([ragged, tagged])
    assert [both[i].tolist() for i in range(6)] == [[5, 6], [], [7, 8, 9], [4, 5, 6], [4],
                                                    [4, 7, 8, 9]]
    picked = gather(ragged, np.array([2, 0, 2]))
    assert [picked[i].tolist() for i in range(3)] == [[7, 8, 9], [5, 6], [7, 8, 9]]


def test_routes_trained_pivot_zero_shot_same_and_refused():
    directions = Directions(parse_directions(DIRECTIONS), tagged=True)
    assert directions.route("en", "de").steps == (Direction("en", "de"),)
    assert directions.route("de", "xx").steps == (Direction("de", "en"), Direction("en", "xx"))
    assert directions.route("de", "de").steps == ()
    with pytest.raises(UserError, match="not a direction this model was trained on.*en-de, "
                                        "de-en, en-xx.*--zero-shot"):
        directions.route("xx", "de")
    assert directions.route("xx", "de", zero_shot=True).steps == (Direction("xx", "de"),)
    with pytest.raises(UserError, match="--tgt fr: the model knows en, de, xx"):
        directions.route("en", "fr")
    assert directions.targets_of("de") == ["en", "xx"]
    assert directions.targets_of("xx") == []
    assert directions.sources_for("de") == ["en", "de"]  # xx reaches de by neither route
    assert directions.sources_for("de", zero_shot=True) == ["en", "de", "xx"]


# ---------------------------------------------------------------------------------------------
# Training


def test_the_tokenizer_has_a_tag_per_language_that_no_text_encodes_to(run):
    tokenizer = load_tokenizers(run, load_run_config(run))[0]
    for language in ("en", "de", "xx"):
        tag = tag_id(tokenizer, language)
        assert tokenizer.sp.is_control(tag) and tokenizer.sp.id_to_piece(tag) == tag_piece(language)
    assert not {tag_id(tokenizer, lang) for lang in ("en", "de", "xx")} & \
        set(tokenizer.encode(["<2de> <2xx> a man"])[0])
    assert tokenizer.decode([[tag_id(tokenizer, "de")] + tokenizer.encode(["a man"])[0]]) == \
        ["a man"]
    with pytest.raises(UserError, match="has no tag <2fr>"):
        tag_id(tokenizer, "fr")


def test_the_tag_of_its_target_begins_every_source(run):
    cfg = load_run_config(run)
    tokenizer = load_tokenizers(run, cfg)[0]
    corpus, epoch_corpus = load_multilingual_data(cfg, tokenizer, lambda event: None)
    assert corpus.parts == [("en", "de", 1500), ("de", "en", 1500), ("en", "xx", 1500)]
    start = 0
    for src, tgt, count in corpus.parts:
        firsts = {int(corpus.src[i][0]) for i in range(start, start + count)}
        assert firsts == {tag_id(tokenizer, tgt)}
        # the rest is the source text, as the tokenizer encodes it
        line = Path(f"{cfg.data.train}.{src}").read_text(encoding="utf-8").splitlines()[0]
        assert corpus.src[start][1:].tolist() == tokenizer.encode([line])[0]
        start += count
    assert epoch_corpus(0) is corpus  # equal directions: no resampling


def test_validation_is_per_direction_and_the_best_is_their_mean(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["event"] == "valid"]
    assert [r["step"] for r in valid] == [60, 120]
    for record in valid:
        each = record["directions"]
        assert sorted(each) == ["de-en", "en-de", "en-xx"]
        assert record["bleu"] == pytest.approx(sum(d["bleu"] for d in each.values()) / 3)
        assert record["loss"] == pytest.approx(sum(d["loss"] for d in each.values()) / 3)
    best = max(valid, key=lambda r: r["bleu"])
    assert valid[-1]["best_step"] == best["step"]
    # it learnt something in every direction: spelling backwards most of all
    assert valid[-1]["directions"]["en-xx"]["loss"] < valid[0]["directions"]["en-xx"]["loss"]


def test_the_identifier_knows_every_language_of_the_run(run, corpora):
    identifier = LanguageIdentifier.load(run / LANGID_FILE)
    assert sorted(identifier.languages) == ["de", "en", "xx"]
    valid = corpora[1]
    for lang in ("en", "de", "xx"):
        lines = Path(f"{valid}.{lang}").read_text(encoding="utf-8").splitlines()
        right = sum(identifier.identify(line).language == lang for line in lines)
        assert right >= len(lines) - 1, lang


def test_a_fine_tuned_run_may_not_add_a_language_its_tokenizer_lacks(run, corpora, tmp_path):
    train_prefix = write_three_way(tmp_path / "more", "train", 50)
    Path(f"{train_prefix}.fr").write_text(Path(f"{train_prefix}.en").read_text())
    cfg = multilingual_config(str(train_prefix), None, "en-de,en-fr", init=str(run),
                              max_steps=1)
    with pytest.raises(UserError, match="has no tag <2fr>"):
        train(cfg, tmp_path / "tuned")
    # new directions between its languages are allowed: their tags are in the vocabulary
    cfg = multilingual_config(str(train_prefix), None, "xx-en,de-xx", init=str(run), max_steps=1)
    assert train(cfg, tmp_path / "tuned-2").state.step == 1


def test_what_a_multilingual_run_cannot_do_is_refused_first(corpora, tmp_path):
    prefix = str(corpora[0])
    with pytest.raises(UserError, match="needs one joint vocabulary"):
        build_config({"model": {"tie_embeddings": False},
                      "data": {"train": prefix, "directions": DIRECTIONS, "joint_vocab": False}})
    result = invoke("train", "--train", prefix, "--directions", "en-de,en-zz", "--output",
                    tmp_path / "out")
    assert_one_line_error(result, 2, "train.zz")  # the missing file of the zz side, named


# ---------------------------------------------------------------------------------------------
# Using it


def test_each_line_goes_its_own_way(model, corpora):
    valid = corpora[1]
    en = Path(f"{valid}.en").read_text(encoding="utf-8").splitlines()[:4]
    de = Path(f"{valid}.de").read_text(encoding="utf-8").splitlines()[:4]
    into_german = model.translate(en, tgt="de", beam=1)
    assert model.translate(en, src="en", tgt="de", beam=1) == into_german  # detected as en
    # one call, lines of two languages: each translated from its own (detected) language
    mixed = model.translate([en[0], de[0]], tgt="en", beam=1)
    assert mixed[0] == en[0]  # already English: its own translation
    assert mixed[1] == model.translate([de[0]], src="de", tgt="en", beam=1)[0]
    # de -> xx was not trained: through English
    through = model.translate(de[:2], src="de", tgt="xx", beam=1)
    english = model.translate(de[:2], src="de", tgt="en", beam=1)
    assert through == model.translate(english, src="en", tgt="xx", beam=1)
    with pytest.raises(UserError, match="xx-de: not a direction this model was trained on"):
        model.translate(["a"], src="xx", tgt="de")
    assert len(model.translate([backwards(en[0])], src="xx", tgt="de", zero_shot=True)) == 1
    with pytest.raises(UserError, match="--tgt: this model translates into de, en, xx"):
        model.translate(en[:1])


def test_the_tag_decides_what_the_model_expects_and_attention_shows_it(model, corpora):
    line = Path(f"{corpora[1]}.en").read_text(encoding="utf-8").splitlines()[0]
    shown = model.attention(line, tgt="xx")
    assert shown.source[0] == "<2xx>"
    scores = model.score([line, line], [backwards(line), backwards(line)], tgt="xx")
    assert scores[0] == pytest.approx(scores[1]) and scores[0] > \
        model.score([line], [backwards(line)], tgt="de")[0]


def test_the_command_line_picks_the_direction(run, corpora):
    en = Path(f"{corpora[1]}.en").read_text(encoding="utf-8").splitlines()[:3]
    result = invoke("translate", "--model", run, "--tgt", "xx", "--beam", "1", "--precision",
                    "fp32", input="".join(x + "\n" for x in en))
    assert result.exit_code == 0, result.output
    api = tinytrans.load(run, device="cpu", precision="fp32", threads=1)
    assert result.stdout.splitlines() == api.translate(en, tgt="xx", beam=1)
    assert_one_line_error(invoke("translate", "--model", run, input="a\n"), 2,
                          "--tgt", "de, en, xx")
    assert_one_line_error(invoke("translate", "--model", run, "--src", "xx", "--tgt", "de",
                                 input="a\n"), 2, "xx-de", "en-de, de-en, en-xx", "--zero-shot")
    assert_one_line_error(invoke("translate", "--model", run, "--tgt", "fr", input="a\n"), 2,
                          "--tgt fr", "en, de, xx")


def test_evaluate_scores_every_direction_it_has_files_for(run, corpora):
    result = invoke("evaluate", "--model", run, "--test", corpora[1], "--beam", "1", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["direction"] for r in rows] == ["en-de", "de-en", "en-xx"]
    assert all(r["sentences"] == 20 for r in rows)
    table = invoke("evaluate", "--model", run, "--test", corpora[1], "--beam", "1",
                   "--directions", "de-en,de-xx")
    assert table.exit_code == 0, table.output
    assert "de-en" in table.stdout and "de-xx" in table.stdout and "en-de" not in table.stdout


def test_the_server_lists_every_language_and_detects_each_item(run, corpora):
    from test_serve import Server, request, translate
    server = Server(run)
    try:
        status, languages = request(f"{server.url}/languages")
        assert status == 200
        assert {x["code"]: x["targets"] for x in languages} == \
            {"en": ["de", "xx"], "de": ["en", "xx"], "xx": []}
        en = Path(f"{corpora[1]}.en").read_text(encoding="utf-8").splitlines()[1]
        de = Path(f"{corpora[1]}.de").read_text(encoding="utf-8").splitlines()[1]
        status, answer = translate(server, q=[en, de], source="auto", target="en", beam=1)
        assert status == 200, answer
        assert [d["language"] for d in answer["detectedLanguage"]] == ["en", "de"]
        api = tinytrans.load(run, device="cpu", precision="fp32", threads=1)
        assert answer["translatedText"] == [en, api.translate([de], src="de", tgt="en",
                                                               beam=1)[0]]
        status, answer = translate(server, q=de, source="de", target="xx", beam=1)
        assert status == 200 and answer["translatedText"] == \
            api.translate([de], src="de", tgt="xx", beam=1)[0]
        status, answer = translate(server, q=de, source="xx", target="de")
        assert status == 400 and "xx-de" in answer["error"]
        status, answer = translate(server, q=de, source="auto", target="fr")
        assert status == 400 and "target: 'fr' is not one of" in answer["error"]
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# Runs of one pair


def test_a_run_of_one_pair_from_before_directions_loads_and_translates_the_same(varied_run,
                                                                             tmp_path):
    import shutil
    old = tmp_path / "old"
    shutil.copytree(varied_run, old)
    config = (old / "config.toml").read_text()
    stripped = "".join(line + "\n" for line in config.splitlines()
                       if not line.startswith(("directions =", "temperature =")))
    assert stripped != config
    (old / "config.toml").write_text(stripped)
    lines = (BUNDLED / "test.en").read_text(encoding="utf-8").splitlines()[:30]
    before = tinytrans.load(varied_run, device="cpu", precision="fp32", threads=1)
    after = tinytrans.load(old, device="cpu", precision="fp32", threads=1)
    assert after.translate(lines) == before.translate(lines)
    assert not after.translator.directions.tagged
    assert after.translator.tags == {"en": (), "de": ()}
    assert after.translate(lines[:3], src="en", tgt="de") == before.translate(lines[:3])
    with pytest.raises(UserError, match="--tgt fr: the model knows en, de"):
        after.translate(lines[:1], tgt="fr")


def test_the_ctranslate2_export_keeps_every_direction(run, corpora, tmp_path):
    pytest.importorskip("ctranslate2", reason="the export extra (ctranslate2) is not installed")
    from tinytrans.config import SearchConfig
    from tinytrans.ct2engine import CT2Translator
    from tinytrans.export import export_ctranslate2
    from tinytrans.lines import Languages
    from tinytrans.translate import Translator
    engine = CT2Translator(export_ctranslate2(run, tmp_path / "ct2"), threads=1)
    ours = Translator(run, precision="fp32", device="cpu")
    en = Path(f"{corpora[1]}.en").read_text(encoding="utf-8").splitlines()[:10]
    # one length limit for every sentence (max_len_a 0): CTranslate2's is per batch
    cfg = SearchConfig(beam=1, max_len_a=0, max_len_b=12)
    for tgt in ("de", "xx"):
        theirs = [t.text for t in engine.translate(en, cfg, languages=Languages("en", tgt))]
        mine = [t.text for t in ours.translate(en, cfg, languages=Languages("en", tgt))]
        # a toy model runs to the limit, which CTranslate2 counts one piece longer: the
        # shorter of each pair begins the longer
        same = sum(a.startswith(b) or b.startswith(a) for a, b in zip(mine, theirs))
        assert same >= 9, (tgt, mine, theirs)
    assert [d.name for d in engine.directions.trained] == DIRECTIONS.split(",")


def test_a_prepared_multilingual_corpus_trains_as_the_text_does(corpora, tmp_path):
    from tinytrans.prepared import open_prepared, prepare, validation_sets
    train_prefix, valid_prefix = corpora
    cfg = multilingual_config(str(train_prefix), str(valid_prefix), max_steps=2)
    manifest = prepare(cfg.data, tmp_path / "data", workers=1)
    assert manifest["data"]["directions"] == DIRECTIONS
    assert manifest["splits"]["train"]["parts"] == [["en", "de", 1500], ["de", "en", 1500],
                                                     ["en", "xx", 1500]]
    prepared = open_prepared(tmp_path / "data")
    text_run = tmp_path / "text"
    train(cfg, text_run)
    tokenizer = load_tokenizers(text_run, load_run_config(text_run))[0]
    encoded, _ = load_multilingual_data(load_run_config(text_run), tokenizer, lambda e: None)
    # the same ids as training from the text, tags included (the same tokenizer: same seed)
    assert prepared.train.parts == encoded.parts
    assert np.array_equal(np.asarray(prepared.train.src.ids), encoded.src.ids)
    assert sorted(validation_sets(prepared.valid)) == ["de-en", "en-de", "en-xx"]
    data_run = tmp_path / "from-data"
    prepared_cfg = build_config({
        "model": {"d_model": 64, "n_heads": 2, "d_ff": 128, "n_encoder_layers": 1,
                  "n_decoder_layers": 1, "dropout": 0.0},
        "data": {"prepared": str(tmp_path / "data")},
        "train": {"batch_tokens": 1500, "max_steps": 2, "validate_every": 2, "threads": 1,
                  "precision": "fp32"}})
    train(prepared_cfg, data_run)
    records = [json.loads(line) for line in (data_run / "metrics.jsonl").read_text().splitlines()]
    assert sorted(next(r for r in records if r["event"] == "valid")["directions"]) == \
        ["de-en", "en-de", "en-xx"]
    assert load_run_config(data_run).data.directions == DIRECTIONS


def test_two_processes_sample_the_directions_as_one_does(tmp_path):
    """Directions of unequal sizes (drawn by temperature each epoch) on a prepared corpus: two
    processes under torchrun's variables make the updates of one process with update_freq 2."""
    import torch
    from dataclasses import replace
    from test_distributed import join, start_processes
    from tinytrans.checkpoint import read_checkpoint
    from tinytrans.prepared import prepare
    big = write_three_way(tmp_path / "big", "train", 300)
    small = write_three_way(tmp_path / "small", "train", 40)
    valid = write_three_way(tmp_path / "valid", "valid", 10)
    cfg = multilingual_config(f"{big}:en-de,{small}:en-xx", f"{valid}:en-de,{valid}:en-xx",
                              "en-de,en-xx", max_steps=4, checkpoint_every=4, validate_every=4,
                              batch_tokens=600)
    with pytest.raises(UserError, match="a second corpus for xx and en"):
        direction_corpora(f"{valid}:en-xx,{valid}:xx-en", parse_directions("en-xx"))
    cfg = replace(cfg, data=replace(cfg.data, valid=f"{valid}:en-de,{small}:en-xx"))
    prepare(cfg.data, tmp_path / "data", workers=1)
    from tinytrans.config import DataConfig
    prepared_cfg = replace(cfg, data=DataConfig(prepared=str(tmp_path / "data")))
    assert join(start_processes(2, prepared_cfg, tmp_path / "two", tmp_path / "errors")) == [0, 0]
    train(replace(prepared_cfg, train=replace(prepared_cfg.train, update_freq=2)), tmp_path / "one")
    final = [read_checkpoint(run / "checkpoints" / "step-0000004.safetensors")[0]
             for run in (tmp_path / "two", tmp_path / "one")]
    for name, tensor in final[1].items():
        if name.startswith("model/"):
            torch.testing.assert_close(final[0][name], tensor, rtol=1e-4, atol=1e-6, msg=name)


def test_every_feature_works_per_direction(model, corpora):
    en = Path(f"{corpora[1]}.en").read_text(encoding="utf-8").splitlines()[:3]
    for line, (text, pairs) in zip(en, model.translate(en, tgt="xx", alignment=True)):
        # every target word once, each linked to a word of its own line (the tag is no word)
        assert sorted(t for _, t in pairs) == list(range(len(text.split())))
        assert all(s < len(line.split()) for s, _ in pairs)
    constrained = model.translate(en, tgt="de", constraints=[["Haus"], [], ["Katze"]])
    assert "Haus" in constrained[0] and "Katze" in constrained[2]
    assert len(model.translate(en, tgt="xx", sample=5, seed=3, nbest=2)[0]) == 2
    assert len(model.translate(en, tgt="de", glossary={"man": "Mann"})) == 3
    # a line of three sentences: translated sentence by sentence, joined
    assert model.translate([" ".join(en)], tgt="xx", beam=1) == \
        [" ".join(model.translate(en, tgt="xx", beam=1))]


def test_requests_of_several_directions_share_a_batch_and_get_their_own_lines(model, corpora):
    from tinytrans.batching import Batcher
    from tinytrans.config import SearchConfig
    from tinytrans.lines import Languages
    en = Path(f"{corpora[1]}.en").read_text(encoding="utf-8").splitlines()[:4]
    de = Path(f"{corpora[1]}.de").read_text(encoding="utf-8").splitlines()[:4]
    batcher = Batcher(model.translator, max_wait=0.2)
    try:
        cfg = SearchConfig(beam=2)
        futures = [batcher.submit(en, cfg, languages=[Languages("en", "xx")] * 4),
                   batcher.submit(de, cfg, languages=[Languages("de", "en")] * 4),
                   batcher.submit(en[:2], cfg, languages=[Languages("en", "de")] * 2)]
        got = [[t.text for t in f.result(120).translations] for f in futures]
    finally:
        batcher.close()
    assert got == [model.translate(en, tgt="xx", beam=2), model.translate(de, src="de", tgt="en",
                                                                          beam=2),
                   model.translate(en[:2], tgt="de", beam=2)]


def test_a_manifest_whose_directions_and_parts_disagree_is_refused(corpora, tmp_path):
    from tinytrans.prepared import MANIFEST, open_prepared, prepare
    cfg = multilingual_config(str(corpora[0]), str(corpora[1]))
    prepare(cfg.data, tmp_path / "data", workers=1)
    path = tmp_path / "data" / MANIFEST
    good = json.loads(path.read_text())
    for change, cause in (
            (lambda m: m["splits"]["train"]["parts"].reverse(), "'splits.train.parts' must list"),
            (lambda m: m["splits"]["valid"].pop("parts"), "'splits.valid.parts' must list"),
            (lambda m: m["data"].update(directions=""), "'data.directions' must name"),
            (lambda m: m.update(version=1), "'data.directions' must name")):
        manifest = json.loads(json.dumps(good))
        change(manifest)
        path.write_text(json.dumps(manifest))
        with pytest.raises(UserError, match=cause):
            open_prepared(tmp_path / "data")
