"""The training spec: parsing, path resolution, and errors that name the key at fault (no Spark needed)."""
from __future__ import annotations

import copy
import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparkship.errors import UsageError
from sparkship.names import validate_alias
from sparkship.refs import parse_ref
from sparkship.spec import (
    ALGORITHMS,
    TrainingSpec,
    estimator_params,
    load_spec,
    parse_spec,
    validate_name,
)

pytestmark = pytest.mark.quick

BASE: dict = {
    "name": "churn",
    "task": "classification",
    "table": "/data/churn",
    "label": "churned",
    "features": {"numeric": ["age", "tenure"], "categorical": ["plan", "region"]},
    "model": {"algorithm": "random_forest", "params": {"numTrees": 50, "maxDepth": 6}},
    "split": {"test_fraction": 0.2, "seed": 42},
    "tuning": {"grid": {"maxDepth": [4, 6]}, "folds": 3},
    "validation": {"thresholds": {"areaUnderROC": {"min": 0.8}}, "max_regression": 0.02},
}


def spec_with(**changes) -> dict:
    """BASE with dotted keys replaced (``None`` deletes the key)."""
    raw = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return raw


def test_the_issue_example_parses_into_typed_fields():
    spec = parse_spec(BASE)
    assert isinstance(spec, TrainingSpec)
    assert (spec.name, spec.task, spec.label) == ("churn", "classification", "churned")
    assert spec.table == "/data/churn" and spec.table_version is None
    assert spec.features.numeric == ("age", "tenure") and spec.features.categorical == ("plan", "region")
    assert spec.model.estimator_class == "RandomForestClassifier"
    assert spec.model.params == {"numTrees": 50, "maxDepth": 6}
    assert (spec.split.test_fraction, spec.split.seed) == (0.2, 42)
    assert spec.tuning is not None and spec.tuning.grid == {"maxDepth": [4, 6]} and spec.tuning.folds == 3
    assert spec.validation.thresholds == {"areaUnderROC": {"min": 0.8}}
    assert spec.validation.max_regression == 0.02


def test_to_dict_parses_back_to_the_same_spec():
    spec = parse_spec(spec_with(table="/data/churn@7"))
    again = parse_spec(spec.to_dict())
    assert again == spec
    assert spec.to_dict()["table"] == "/data/churn@7"


@pytest.mark.parametrize(
    "algorithm, task, expected",
    [
        ("logistic_regression", "classification", "LogisticRegression"),
        ("decision_tree", "classification", "DecisionTreeClassifier"),
        ("random_forest", "classification", "RandomForestClassifier"),
        ("gbt", "classification", "GBTClassifier"),
        ("decision_tree", "regression", "DecisionTreeRegressor"),
        ("random_forest", "regression", "RandomForestRegressor"),
        ("gbt", "regression", "GBTRegressor"),
        ("linear_regression", "regression", "LinearRegression"),
    ],
)
def test_algorithms_map_to_the_spark_estimator_of_the_task(algorithm, task, expected):
    raw = spec_with(task=task, model={"algorithm": algorithm}, tuning=None, validation=None)
    assert parse_spec(raw).model.estimator_class == expected


def test_param_values_go_through_sparks_type_converters():
    spec = parse_spec(spec_with(model={"algorithm": "random_forest", "params": {"numTrees": 5.0}}))
    assert spec.model.params == {"numTrees": 5} and isinstance(spec.model.params["numTrees"], int)


def test_relative_table_resolves_against_the_spec_files_folder(tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    path = folder / "churn.yml"
    path.write_text(
        "name: churn\ntask: regression\ntable: ../tables/churn@3\nlabel: y\n"
        "features: {numeric: [a]}\nmodel: {algorithm: linear_regression, params: {maxIter: 5}}\n"
    )
    spec = load_spec(str(path))
    assert spec.table == str(tmp_path / "tables" / "churn")
    assert spec.table_version == 3
    assert spec.source == str(path)


def test_with_table_overrides_the_table_and_version(tmp_path):
    spec = parse_spec(BASE).with_table("other@1", base_dir=str(tmp_path))
    assert (spec.table, spec.table_version) == (str(tmp_path / "other"), 1)


@pytest.mark.parametrize("name", ["..", "a/b", "/abs", "Churn", "churn model", "", "churn.v2", "ch\nurn"])
def test_bad_names_are_refused(name):
    with pytest.raises(UsageError, match=r"invalid"):
        validate_name(name)
    with pytest.raises(UsageError, match=r"spec key 'name'"):
        parse_spec({**BASE, "name": name})


@given(st.text(max_size=12))
def test_validate_name_accepts_exactly_the_name_pattern(name):
    if re.fullmatch(r"[a-z0-9_-]+", name):
        assert validate_name(name) == name
    else:
        with pytest.raises(UsageError):
            validate_name(name)


@pytest.mark.parametrize(
    "changes, key, words",
    [
        ({"model__params": {"numTres": 5}}, "model.params.numTres",
         "unknown parameter of RandomForestClassifier; known: "),
        ({"model__params": {"maxDepth": "deep"}}, "model.params.maxDepth", "bad value 'deep'"),
        ({"model__params": {"labelCol": "x"}}, "model.params.labelCol", "unknown parameter"),
        ({"model__algorithm": "xgboost"}, "model.algorithm", "unknown algorithm 'xgboost'"),
        ({"model__algorithm": "linear_regression"}, "model.algorithm", "cannot be used for task 'classification'"),
        ({"task": "regression", "model": {"algorithm": "logistic_regression"}, "tuning": None, "validation": None},
         "model.algorithm", "cannot be used for task 'regression'"),
        ({"task": "clustering"}, "task", "expected one of classification, regression"),
        ({"label": None}, "label", "is required"),
        ({"table": "/t@latest"}, "table", "must be a number"),
        ({"features": {"numeric": ["age"], "categorical": ["age"]}}, "features.categorical", "also listed as numeric"),
        ({"features": {"numeric": ["age", "age"]}}, "features.numeric", "listed twice"),
        ({"features": {}}, "features", "at least one"),
        ({"features": {"numeric": "age"}}, "features.numeric", "a list of column names"),
        ({"features": {"numeric": ["features"]}}, "features.numeric", "clashes"),
        ({"features": {"numeric": ["age"], "impute": "zero"}}, "features.impute", "mean, median, mode"),
        ({"label": "age"}, "label", "also listed as a feature"),
        ({"lable": "x"}, "lable", "unknown key"),
        ({"model__parms": {}}, "model.parms", "unknown key"),
        ({"split__test_fraction": 1.5}, "split.test_fraction", "between 0 and 1"),
        ({"split__seed": "x"}, "split.seed", "expected an integer"),
        ({"tuning__grid": {"numTres": [1, 2]}}, "tuning.grid.numTres", "unknown parameter"),
        ({"tuning__grid": {"maxDepth": []}}, "tuning.grid.maxDepth", "non-empty list"),
        ({"tuning__folds": 1}, "tuning.folds", "at least 2"),
        ({"tuning__metric": "rmse"}, "tuning.metric", "unknown metric 'rmse'"),
        ({"validation__thresholds": {"rmse": {"max": 1}}}, "validation.thresholds.rmse", "unknown metric"),
        ({"validation__thresholds": {"f1": {"above": 1}}}, "validation.thresholds.f1.above", "unknown key"),
        ({"validation__max_regression": -1}, "validation.max_regression", ">= 0"),
    ],
)
def test_errors_name_the_key(changes, key, words):
    with pytest.raises(UsageError) as info:
        parse_spec(spec_with(**changes))
    message = str(info.value)
    assert f"spec key '{key}'" in message
    assert words in message


def test_unknown_param_message_lists_the_known_ones():
    with pytest.raises(UsageError) as info:
        parse_spec(spec_with(model__params={"numTres": 5}))
    known = str(info.value).split("known: ")[1].split(", ")
    assert "numTrees" in known and "maxDepth" in known
    # the params the pipeline sets itself are not offered
    assert "featuresCol" not in known and "labelCol" not in known


def test_every_offered_estimator_declares_params():
    for by_task in ALGORITHMS.values():
        for class_name in filter(None, by_task.values()):
            assert "maxIter" in estimator_params(class_name) or "maxDepth" in estimator_params(class_name)


def test_spec_file_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_spec(str(tmp_path / "nope.yml"))
    empty = tmp_path / "empty.yml"
    empty.write_text("")
    with pytest.raises(UsageError, match="is empty"):
        load_spec(str(empty))
    broken = tmp_path / "broken.yml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_spec(str(broken))
    bad = tmp_path / "bad.yml"
    bad.write_text("name: churn\ntask: regression\ntable: t\nlabel: y\nfeatures: {numeric: [a]}\n"
                   "model: {algorithm: svm}\n")
    with pytest.raises(UsageError) as info:
        load_spec(str(bad))
    assert str(bad) in str(info.value) and "spec key 'model.algorithm'" in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["bad.yml", "broken.yml", "empty.yml"]  # nothing else was written


@pytest.mark.parametrize(
    "ref", ["churn\n", "churn@champion\n", "churn\n@champion", "churn/3\n", "churn/\u0663", "churn/\u00b2", "\nchurn"]
)
def test_refs_with_a_trailing_newline_or_non_ascii_digits_are_refused(ref):
    """``^...$`` with ``re.match`` accepted "churn\\n" ($ matches before a final newline): names, aliases and
    versions must match in full."""
    with pytest.raises(UsageError):
        parse_ref(ref)
    with pytest.raises(UsageError):
        validate_alias("champion\n")


@given(st.from_regex(r"[a-z0-9_-]+", fullmatch=True), st.sampled_from(["\n", "\r\n", " ", "\t"]))
def test_a_valid_name_with_whitespace_after_it_is_refused(name, tail):
    with pytest.raises(UsageError, match="invalid"):
        validate_name(name + tail)
