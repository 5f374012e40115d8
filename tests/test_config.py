"""Tests for the config loader: YAML + overrides -> RunConfig, and its problem reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from raytune_llm.config.loader import (
    dump_config,
    get_dotted,
    load_config,
    set_dotted,
    validate_files,
)
from raytune_llm.config.schema import RunConfig
from raytune_llm.errors import ConfigError

CONFIGS_DIR = Path(__file__).parent.parent / "configs"

MINIMAL = """\
data:
  path: ../shared/data/reviews.csv
model:
  name_or_path: builtin:minilm
"""


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return info.value.problems


def test_minimal_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.data.path == "../shared/data/reviews.csv"  # relative path kept as written
    assert config.model.name_or_path == "builtin:minilm"
    assert config.train == RunConfig.model_fields["train"].default_factory()
    assert config.train.epochs == 3
    assert config.data.split.train == pytest.approx(0.8)
    assert set(config.tune.search_space) == {"train.learning_rate", "train.batch_size"}


def test_output_name_defaults_to_file_stem(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL, "quickstart.yaml")).output.name == "quickstart"
    named = load_config(write(tmp_path, MINIMAL + "output: {name: mine}\n"))
    assert named.output.name == "mine"


def test_overrides_are_typed_and_create_missing_sections(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)  # no train:, eval: or output: sections at all
    config = load_config(
        path,
        [
            "train.epochs=2",
            "train.learning_rate=0.001",
            "data.labels=[neg, pos]",
            "model.name_or_path=distilbert-base-uncased",
            "eval.f1_average=micro",
            "output.dir=/tmp/runs",
        ],
    )
    assert config.train.epochs == 2 and isinstance(config.train.epochs, int)
    assert config.train.learning_rate == pytest.approx(1e-3)
    assert config.data.labels == ["neg", "pos"]
    assert config.model.name_or_path == "distilbert-base-uncased"
    assert config.eval.f1_average == "micro"
    assert config.output.dir == "/tmp/runs"


def test_override_can_edit_a_search_space_entry(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, MINIMAL),
        [
            "tune.search_space={train.learning_rate: {type: uniform, low: 1.0e-5, high: 1.0e-4}}",
            "tune.search_space.train.learning_rate.high=2.0e-4",
            "tune.search_space.train.epochs.type=choice",
            "tune.search_space.train.epochs.values=[1, 2]",
        ],
    )
    space = config.tune.search_space
    assert space["train.learning_rate"].high == pytest.approx(2e-4)
    assert space["train.epochs"].values == [1, 2]


def test_bad_overrides_are_reported_by_name(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, MINIMAL), ("train.epochs", "train.epochs=", "a..b=1"))
    assert len(problems) == 3
    assert problems[0].startswith("override 'train.epochs':")
    assert problems[1].startswith("override 'train.epochs=': train.epochs: empty value")
    assert problems[2].startswith("override 'a..b=1':")


def test_override_errors_name_the_override(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, MINIMAL), ("train.epochs=0",))
    assert problems == [
        "override 'train.epochs=0': train.epochs: "
        "Input should be greater than or equal to 1 (got 0)"
    ]


def test_unknown_key_suggests_the_closest_field(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "train:\n  learnig_rate: 0.001\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: train.learnig_rate: unknown key")
    assert "did you mean 'learning_rate'?" in problem
    assert "(got 0.001)" in problem


def test_key_in_the_wrong_section_suggests_the_right_one(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, MINIMAL + "train:\n  max_length: 256\n"))
    assert "train.max_length: unknown key here; did you mean 'data.max_length'?" in problem


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = """\
data:
  path: data.csv
  max_length: 4
model: {}
train:
  epochs: 0
  precision: fp8
  batch_size: many
tune:
  shceduler: asha
"""
    path = write(tmp_path, text)
    problems = problems_of(path)
    expected = {
        "data.max_length": "greater than or equal to 8 (got 4)",
        "model.name_or_path": "required key is missing",
        "train.epochs": "(got 0)",
        "train.precision": "'fp32', 'bf16' or 'fp16' (got 'fp8')",
        "train.batch_size": "(got 'many')",
        "tune.shceduler": "did you mean 'scheduler'?",
    }
    assert len(problems) == len(expected), problems
    for dotted, fragment in expected.items():
        [line] = [p for p in problems if p.startswith(f"{path}: {dotted}: ")]
        assert fragment in line
    missing = next(p for p in problems if "model.name_or_path" in p)
    assert "(got" not in missing  # nothing was given, so there is no value to show


def test_union_errors_are_merged_into_one_line(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, MINIMAL + "train: {use_gpu: maybe}\n"))
    assert problem.startswith(f"{tmp_path / 'run.yaml'}: train.use_gpu: ")
    assert "'auto'" in problem and "(got 'maybe')" in problem


def test_split_fractions_must_sum_to_one(tmp_path: Path) -> None:
    split = "data:\n  split: {train: 0.7, validation: 0.2, test: 0.2}\n"
    path = write(tmp_path, MINIMAL.replace("data:\n", split))
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: data.split: train + validation + test must be 1.0")
    assert "(got 1.1)" in problem


def test_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, MINIMAL + "train: 5\n"))
    assert "train: must be a mapping" in problem and "(got 5)" in problem


def test_bad_yaml_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  path: a.csv\n model: [\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: invalid YAML at line 3")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "- data\n- model\n"))
    assert "top level must be a mapping" in problem and "(got a list)" in problem


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert problems_of(path) == [f"{path}: config file does not exist"]


def test_bad_search_space_key_and_choice_value(tmp_path: Path) -> None:
    text = MINIMAL + """\
tune:
  search_space:
    train.learnig_rate: {type: loguniform, low: 1.0e-5, high: 1.0e-3}
    train.batch_size: {type: choice, values: [8, 0, 32]}
    data.split: {type: choice, values: [0.5]}
"""
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert len(problems) == 3, problems
    assert (
        f"{path}: tune.search_space.train.learnig_rate: not a field of the config; "
        "did you mean 'train.learning_rate'?"
    ) in problems
    assert (
        f"{path}: tune.search_space.train.batch_size.values[1]: "
        "Input should be greater than or equal to 1 (got 0)"
    ) in problems
    assert any(p.startswith(f"{path}: tune.search_space.data.split: ") for p in problems)


def test_search_space_range_bounds_are_checked(tmp_path: Path) -> None:
    text = MINIMAL + """\
tune:
  search_space:
    train.learning_rate: {type: uniform, low: 0.1, high: 2}
"""
    [problem] = problems_of(write(tmp_path, text))
    expected = "tune.search_space.train.learning_rate.high: Input should be less than 1 (got 2)"
    assert problem.endswith(expected)


def test_search_space_values_take_the_field_type(tmp_path: Path) -> None:
    # YAML 1.1 reads `1e-5` (no dot) as a string; the loader stores the validated float.
    text = MINIMAL + """\
tune:
  search_space:
    train.learning_rate: {type: choice, values: [1e-5, 3e-5]}
"""
    config = load_config(write(tmp_path, text))
    assert config.tune.search_space["train.learning_rate"].values == [1e-5, 3e-5]


def test_set_dotted_and_get_dotted_round_trip(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    changed = set_dotted(config, "train.learning_rate", 3e-5)
    assert get_dotted(changed, "train.learning_rate") == pytest.approx(3e-5)
    assert config.train.learning_rate == pytest.approx(5e-5)  # the original is untouched
    assert changed.model_dump() == {
        **config.model_dump(),
        "train": {**config.train.model_dump(), "learning_rate": 3e-5},
    }
    nested = set_dotted(changed, "data.split.test", 0.1)
    assert get_dotted(nested, "data.split.test") == pytest.approx(0.1)
    assert get_dotted(config, "tune.search_space.train.batch_size").values == [8, 16, 32]


def test_set_dotted_rejects_invalid_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(ConfigError) as info:
        set_dotted(config, "train.batch_size", 0)
    assert info.value.problems == [
        "set_dotted: train.batch_size: Input should be greater than or equal to 1 (got 0)"
    ]
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        set_dotted(config, "train.learnig_rate", 1e-4)
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        get_dotted(config, "train.learnig_rate")


def test_dump_config_round_trip(tmp_path: Path) -> None:
    text = MINIMAL + "train: {epochs: 5, use_gpu: false, learning_rate: 2.0e-5}\n"
    config = load_config(write(tmp_path, text), ["data.labels=[a, b, c]"])
    target = tmp_path / "out" / "config.yaml"
    dump_config(config, target)
    assert load_config(target) == config


def test_validate_files_collects_problems_per_file(tmp_path: Path) -> None:
    good = write(tmp_path, MINIMAL, "good.yaml")
    bad = write(tmp_path, MINIMAL + "train: {epochs: 0}\n", "bad.yaml")
    missing = tmp_path / "missing.yaml"
    report = validate_files([good, bad, missing])
    assert report[str(good)] == []
    assert len(report[str(bad)]) == 1 and "train.epochs" in report[str(bad)][0]
    assert report[str(missing)] == [f"{missing}: config file does not exist"]
    assert validate_files([good], ["train.epochs=-1"])[str(good)] != []


def test_every_shipped_config_validates() -> None:
    paths = sorted(CONFIGS_DIR.glob("*.yaml"))
    assert paths, f"no configs found in {CONFIGS_DIR}"
    report = validate_files(paths)
    assert {path: problems for path, problems in report.items() if problems} == {}
