"""Configuration: frozen dataclasses, presets and TOML files where unknown keys are errors."""

from __future__ import annotations

import copy
import re
import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytrans.config import (
    PRESETS,
    RESUMABLE,
    RULES,
    SECTIONS,
    NonEmpty,
    OneOf,
    ZeroOr,
    ModelConfig,
    RunConfig,
    build_config,
    config_to_dict,
    differences,
    merge,
    preset,
    read_toml,
    resolve_train_config,
    to_toml,
)
from tinytrans.errors import UserError


def round_trip(config: RunConfig) -> RunConfig:
    return build_config(tomllib.loads(to_toml(config)))


# ---------------------------------------------------------------------------------------------
# Checking keys and types

def test_defaults_build() -> None:
    config = build_config({})
    assert config.model == ModelConfig()
    assert config.train.batch_tokens == 4096


def test_unknown_section_is_named() -> None:
    with pytest.raises(UserError, match=r"\[modle\]") as error:
        build_config({"modle": {"d_model": 128}}, "my.toml")
    assert str(error.value).startswith("my.toml:")


@pytest.mark.parametrize("section, key",
                         [("model", "d_modle"), ("data", "vocab"), ("train", "lr_peak")])
def test_unknown_key_is_named(section: str, key: str) -> None:
    with pytest.raises(UserError, match=f"'{section}.{key}'"):
        build_config({section: {key: 1}})


@pytest.mark.parametrize("section, key, value", [
    ("train", "batch_tokens", "4096"),  # str for int
    ("train", "batch_tokens", 4096.0),  # float for int
    ("model", "d_model", True),  # bool is not an int here
    ("model", "pre_norm", 1),  # int is not a bool
    ("model", "dropout", "0.1"),
    ("model", "d_model", None),  # None only where the default may be None
    ("data", "tokenizer", 5),  # str | None
    ("data", "train", ["a", "b"]),
    ("train", "max_steps", 1.5),  # int | None
])
def test_wrong_type_is_named(section: str, key: str, value: Any) -> None:
    with pytest.raises(UserError, match=f"'{section}.{key}'"):
        build_config({section: {key: value}})


def test_int_is_accepted_and_stored_as_float_for_float_keys() -> None:
    config = build_config({"train": {"lr": 1, "max_time": 2}, "model": {"dropout": 0}})
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.model.dropout == 0.0 and isinstance(config.model.dropout, float)
    assert config.train.max_time == 2


def test_none_is_accepted_for_optional_keys() -> None:
    config = build_config({"train": {"max_steps": None}, "data": {"valid": None}})
    assert config.train.max_steps is None and config.data.valid is None


def test_d_model_not_divisible_by_n_heads_is_a_user_error() -> None:
    with pytest.raises(UserError, match="model.d_model = 100 is not divisible by model.n_heads = 3"):
        ModelConfig(d_model=100, n_heads=3)
    with pytest.raises(UserError, match="d_model"):
        build_config({"model": {"d_model": 250, "n_heads": 4}})
    assert ModelConfig(d_model=96, n_heads=3).d_model == 96


def test_tied_embeddings_need_one_vocabulary() -> None:
    with pytest.raises(UserError, match="tie_embeddings"):
        ModelConfig(src_vocab_size=100, tgt_vocab_size=200)
    untied = ModelConfig(src_vocab_size=100, tgt_vocab_size=200, tie_embeddings=False)
    assert untied.tgt_vocab_size == 200


def test_configs_are_frozen() -> None:
    config = build_config({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model.d_model = 8  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Presets and merging

@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_presets_build_with_their_values(name: str) -> None:
    values = preset(name)
    config = build_config(values, f"preset {name}")
    for section, table in values.items():
        for key, value in table.items():
            assert getattr(getattr(config, section), key) == value


def test_presets_grow_in_size() -> None:
    def size(name: str) -> int:  # weights per token position: layers x (attention + FFN)
        m = build_config(preset(name)).model
        return (m.n_encoder_layers + m.n_decoder_layers) * (4 * m.d_model ** 2 + 2 * m.d_model * m.d_ff)
    sizes = [size(name) for name in ("tiny", "small", "base")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3


def test_unknown_preset_is_named() -> None:
    with pytest.raises(UserError, match="'huge'"):
        preset("huge")


def test_merge_overrides_key_by_key_without_changing_its_inputs() -> None:
    base = copy.deepcopy(PRESETS["tiny"])
    override = {"model": {"d_model": 64}, "train": {"seed": 9}}
    merged = merge(PRESETS["tiny"], override)
    assert merged["model"]["d_model"] == 64
    assert merged["model"]["n_heads"] == base["model"]["n_heads"]
    assert merged["train"]["seed"] == 9 and merged["train"]["lr"] == base["train"]["lr"]
    assert PRESETS["tiny"] == base
    assert override == {"model": {"d_model": 64}, "train": {"seed": 9}}


# ---------------------------------------------------------------------------------------------
# TOML

@pytest.mark.parametrize("name", [None, "tiny", "small", "base"])
def test_toml_round_trip_of_presets(name: str | None) -> None:
    config = build_config(preset(name) if name else {})
    assert round_trip(config) == config


def test_toml_round_trip_with_every_optional_value_set() -> None:
    config = build_config({
        "model": {"src_vocab_size": 1000, "tgt_vocab_size": 1200, "tie_embeddings": False,
                  "pre_norm": False},
        "data": {"train": "data/train", "valid": "data/valid", "tokenizer": "tok.model",
                 "src": "cs", "tgt": "fr"},
        "train": {"max_steps": 10, "max_epochs": 2, "max_time": 1.5, "patience": 3, "threads": 2,
                  "lr": 1e-9, "adam_eps": 1e-20, "weight_decay": 99.5},
    })
    assert round_trip(config) == config


@pytest.mark.parametrize("path", [
    'with "quotes"', "back\\slash\\", "C:\\data\\train", "tab\tinside", "ünïcödé/语料",
    "spaces in it",
    "new\nline", "del\x7f",
])
def test_toml_round_trip_of_any_path(path: str) -> None:
    config = build_config({"data": {"train": path, "tokenizer": path}})
    assert round_trip(config) == config


@settings(max_examples=100, deadline=None)
@given(lr=st.floats(min_value=0, max_value=10, exclude_min=True),
       seed=st.integers(0, 2**32 - 1),
       train=st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=30))
def test_toml_round_trip_of_any_float_int_and_printable_text(lr: float, seed: int,
                                                             train: str) -> None:
    config = build_config({"train": {"lr": lr, "seed": seed}, "data": {"train": train}})
    assert round_trip(config) == config


def test_to_toml_leaves_out_none_values() -> None:
    text = to_toml(build_config({}))
    assert "max_steps" not in text and "tokenizer" not in text
    assert set(tomllib.loads(text)) == set(SECTIONS)


def test_read_toml_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such config file"):
        read_toml(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\nd_model = 3\n")
    with pytest.raises(UserError, match="broken.toml: not valid TOML"):
        read_toml(broken)
    flat = tmp_path / "flat.toml"
    flat.write_text("d_model = 3\n")
    with pytest.raises(UserError, match="'d_model' must be a \\[section\\] table"):
        read_toml(flat)


def test_read_toml_of_a_directory_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError) as error:
        read_toml(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_read_toml_with_invalid_utf8_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[data]\ntrain = "d\xfcsseldorf"\n'.encode("latin-1"))
    with pytest.raises(UserError) as error:
        read_toml(path)
    assert str(path) in str(error.value)


def test_read_toml_then_build(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[model]\nd_model = 64\nn_heads = 2\n\n[data]\ntrain = "x/train"\n')
    config = build_config(read_toml(path), str(path))
    assert (config.model.d_model, config.model.n_heads, config.data.train) == (64, 2, "x/train")


# ---------------------------------------------------------------------------------------------
# Differences on resume

WHEN_NONE = {"valid": "data/valid", "tokenizer": "tok.model", "max_steps": 2, "max_epochs": 2,
             "max_time": 1.0, "patience": 2, "threads": 2, "average_last": 2,
             "prepared": "data/prepared"}


def _changed(value: Any, section: str, key: str) -> Any:
    """Another valid value for a key, whatever its type."""
    rule = RULES[section].get(key)
    if value is None:
        return WHEN_NONE[key]
    if isinstance(rule, OneOf):
        return next(choice for choice in rule.choices if choice != value)
    if key in ("d_model", "n_heads"):
        return value * 2
    if key.endswith("vocab_size"):
        return 1000
    if key == "directions":  # "" is a run of one pair; any other value must name directions
        return "en-de,de-en"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value > 0 else 0.5
    return value + "x"


def _all_keys() -> list[tuple[str, str]]:
    return [(section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


# tie_embeddings off so that each vocabulary size may change alone; a budget for lr_schedule
BASE = {"model": {"tie_embeddings": False}, "train": {"max_time": 5.0}}


@pytest.mark.parametrize("section, key", _all_keys(), ids=lambda x: x)
def test_differences_reports_exactly_the_changed_key_unless_resumable(section: str,
                                                                      key: str) -> None:
    old = build_config(BASE)
    values = config_to_dict(old)
    values[section][key] = _changed(values[section][key], section, key)
    new = build_config(values)
    assert getattr(getattr(new, section), key) != getattr(getattr(old, section), key)
    found = differences(old, new)
    if (section, key) in RESUMABLE:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith(f"{section}.{key}: ")


def test_differences_shows_old_and_new_values() -> None:
    old = build_config({})
    new = build_config({"train": {"lr": 0.5, "max_steps": 100}, "model": {"d_ff": 64}})
    found = differences(old, new)
    assert sorted(found) == ["model.d_ff: 1024 -> 64", "train.lr: 0.001 -> 0.5"]
    assert differences(old, old) == []


def test_resumable_keys_are_limits_and_housekeeping() -> None:
    names = {key for _, key in RESUMABLE}
    assert {"max_steps", "max_time", "device", "threads"} <= names
    assert not names & {"lr", "batch_tokens", "seed", "update_freq", "warmup_steps"}


# ---------------------------------------------------------------------------------------------
# Ranges: every key with a bad value is refused, naming the key, its origin, value and range

def _bad_values(rule: Any, kind: type) -> list[Any]:
    """Values just outside what `rule` admits (and NaN/infinity for floats)."""
    if isinstance(rule, OneOf):
        return ["nonsense"]
    if isinstance(rule, NonEmpty):
        return ["", "  "]
    if isinstance(rule, ZeroOr):
        return [rule.rest.low - 1] if rule.rest.low > 1 else [-1]
    bad: list[Any] = []
    if rule.low is not None:
        bad.append(rule.low if rule.low_open else rule.low - 1)
    if rule.high is not None:
        bad.append(rule.high if rule.high_open else rule.high + 1)
    if kind is float:
        bad += [float("nan"), float("inf")]
    return [kind(v) if kind is int else v for v in bad]


def _ruled_keys() -> list[tuple[str, str, Any]]:
    cases = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for key, rule in RULES[section].items():
            kind = float if float in typing.get_args(hints[key]) or hints[key] is float else (
                str if hints[key] is str else int)
            cases += [(section, key, value) for value in _bad_values(rule, kind)]
    return cases


def test_every_number_and_choice_has_a_rule() -> None:
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            hint = typing.get_type_hints(cls)[f.name]
            kinds = set(typing.get_args(hint)) or {hint}
            if kinds & {int, float} or f.name in ("src", "tgt", "model_type", "utf8_errors",
                                                  "lr_schedule", "best_metric", "precision",
                                                  "device"):
                assert f.name in RULES[section], f"{section}.{f.name} has no allowed range"


@pytest.mark.parametrize("section, key, value", _ruled_keys(), ids=str)
def test_a_bad_value_in_a_toml_file_names_file_key_value_and_range(section: str, key: str,
                                                                   value: Any) -> None:
    values = {section: {key: value}, "train": {"max_time": 5.0}} if section != "train" else {
        section: {key: value}}
    with pytest.raises(UserError) as error:
        build_config(values, "run.toml")
    message = str(error.value)
    assert message.startswith(f"run.toml: '{section}.{key}' = {value!r} must be "), message
    assert str(RULES[section][key]) in message


@pytest.mark.parametrize("section, key, value", _ruled_keys(), ids=str)
def test_a_bad_flag_value_names_the_flag(section: str, key: str, value: Any) -> None:
    flags = {"data": {"train": "corpus/train"}}
    flags.setdefault(section, {})[key] = value
    with pytest.raises(UserError) as error:
        resolve_train_config(flags)
    flag = "--" + key.replace("_", "-")
    assert str(error.value).startswith(f"{flag} = {value!r} must be "), str(error.value)


def test_a_bad_value_is_named_by_the_layer_that_gave_it(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text("[train]\nwarmup_steps = -3\n")
    with pytest.raises(UserError,
                       match=r"run.toml: 'train.warmup_steps' = -3 must be in \[0, 1,000,000,000,000\]"):
        resolve_train_config({"data": {"train": "x"}}, toml=toml)


@pytest.mark.parametrize("values, names", [
    ({"model": {"d_model": 100, "n_heads": 3}}, ["'model.d_model' = 100", "'model.n_heads' = 3"]),
    ({"model": {"tie_embeddings": True}, "data": {"joint_vocab": False}},
     ["'model.tie_embeddings'", "'data.joint_vocab'"]),
    ({"train": {"lr_schedule": "linear"}}, ["'train.lr_schedule'", "max_steps or max_time"]),
    ({"train": {"average_last": 5, "keep_last": 3}}, ["'train.average_last' = 5", "'train.keep_last' = 3"]),
])
def test_keys_that_must_agree_are_named_together(values: dict, names: list[str]) -> None:
    with pytest.raises(UserError) as error:
        build_config(values, "run.toml")
    for name in names:
        assert name in str(error.value)


def test_resolve_train_config_precedence(tmp_path: Path) -> None:
    saved = tmp_path / "config.toml"
    saved.write_text(to_toml(build_config(merge(preset("small"), {"data": {"train": "a"}}))))
    toml = tmp_path / "run.toml"
    toml.write_text("[train]\nlr = 0.5\nwarmup_steps = 7\n")
    config = resolve_train_config({"train": {"lr": 0.25, "seed": None}}, "tiny", toml, saved)
    assert config.model.d_model == 128  # the preset over the saved config
    assert config.train.warmup_steps == 7  # the TOML file over the preset
    assert config.train.lr == 0.25  # flags over everything; None means not given
    assert config.train.seed == 1
    assert config.data.train == "a"  # from the saved run


def test_resolve_train_config_defaults_to_tiny_and_needs_a_corpus() -> None:
    assert resolve_train_config({"data": {"train": "x"}}).model.d_model == PRESETS["tiny"]["model"]["d_model"]
    with pytest.raises(UserError, match="--train"):
        resolve_train_config({})


def test_unknown_key_in_a_saved_config_names_that_file(tmp_path: Path) -> None:
    saved = tmp_path / "config.toml"
    saved.write_text("[train]\nlearning_rate = 1.0\n")
    with pytest.raises(UserError, match=r"config.toml: unknown key 'train.learning_rate'"):
        resolve_train_config({}, saved=saved)


def test_every_number_a_config_takes_has_an_upper_bound() -> None:
    """A value accepted as "finite" must not overflow later (1e39 minutes, a 10^30 batch)."""
    from tinytrans.config import RULES, Interval, ZeroOr
    for section, rules in RULES.items():
        for key, rule in rules.items():
            interval = rule.rest if isinstance(rule, ZeroOr) else rule
            if isinstance(interval, Interval):
                assert interval.high is not None, f"{section}.{key} has no upper bound"
                with pytest.raises(UserError, match=f"'{section}.{key}' = "):
                    build_config({section: {key: type(interval.high)(interval.high) * 10 + 1}})


@pytest.mark.parametrize("field, value, message", [
    ("max_connections", 0, "--max-connections: 0 must lie between 1 and 10,000"),
    ("max_connections", 10**6, "--max-connections: 1000000 must lie between"),
    ("request_timeout", 0.0, "--request-timeout: 0.0 must be more than 0 and at most 86400"),
    ("request_timeout", float("inf"), "--request-timeout: inf must be more than 0"),
    ("timeout", 1e300, "--timeout: 1e+300 must be more than 0 and at most 86400"),
    ("max_body", 2**40, "--max-body: 1099511627776 must lie between 1 and"),
    ("queue", 10**9, "--queue: 1000000000 must lie between 1 and 1,000,000"),
])
def test_every_serve_limit_is_bounded_both_ways(field, value, message) -> None:
    from tinytrans.config import ServeConfig
    with pytest.raises(UserError, match=re.escape(message)):
        ServeConfig(**{field: value})


def test_the_reproduction_recipe_is_wu_et_al_transformer_tiny() -> None:
    """bench/wu2021.toml (bench/reproduce_wu2021.py) stays a valid config with the paper's
    shape and optimisation: the bench runs for hours, so a key that stops parsing must fail here."""
    recipe = Path(__file__).resolve().parents[1] / "bench" / "wu2021.toml"
    values = read_toml(recipe)
    values["data"]["train"] = "unused"
    cfg = build_config(values, str(recipe))
    m, t = cfg.model, cfg.train
    assert (m.d_model, m.d_ff, m.n_heads, m.n_encoder_layers, m.n_decoder_layers) == (128, 256, 4, 4, 4)
    assert (m.dropout, m.pre_norm, m.tie_embeddings) == (0.3, False, True)
    assert (t.batch_tokens * t.update_freq, t.lr, t.warmup_steps, t.max_steps) == (8192, 0.005, 2000, 8000)
    assert (t.label_smoothing, t.adam_beta2, t.clip_norm, t.best_metric) == (0.0, 0.98, 25.0, "loss")
    assert (t.patience, t.average_last, t.precision) == (10, 10, "fp32")
