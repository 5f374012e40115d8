"""Agreement metrics against independent implementations, on real crowd labels and hand-built cases.

Cohen's kappa is checked against scikit-learn, Fleiss' kappa against statsmodels and
Krippendorff's alpha against the `krippendorff` package, each to 1e-6. The reference
side builds its inputs with pandas straight from the file, so our own coding of the
triples is under test too. The real data are Snow et al. (2008)'s nominal crowd tasks.
"""

from __future__ import annotations

import itertools
import warnings

import krippendorff
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss

from raytune_llm.errors import DataError
from raytune_llm.quality.agreement import (
    cohen_kappa,
    fleiss_kappa,
    item_agreement,
    krippendorff_alpha,
    pairwise_cohen_kappa,
)
from raytune_llm.quality.annotations import count_matrix, encode, natural_order, rating_matrix
from tests.conftest import shared_data

SNOW = "crowd/snow2008/all_collected_data/{}.standardized.tsv"
NOMINAL_TASKS = ["rte", "temp", "wsd"]  # affect and wordsim are numeric scales, not categories
ITEM, WORKER, LABEL = "orig_id", "!amt_worker_ids", "response"


@pytest.fixture(scope="module", params=NOMINAL_TASKS)
def snow(request: pytest.FixtureRequest) -> pd.DataFrame:
    """One of Snow et al.'s nominal tasks as read by pandas (not by our reader)."""
    frame = pd.read_csv(shared_data(SNOW.format(request.param)), sep="\t", dtype=str)
    frame.attrs["task"] = request.param
    return frame


def _triples(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    return list(zip(frame[ITEM], frame[WORKER], frame[LABEL]))


def _reliability(frame: pd.DataFrame) -> np.ndarray:
    """Workers x items matrix for the krippendorff package, NaN where a worker did not label."""
    matrix: np.ndarray = frame.pivot(index=WORKER, columns=ITEM, values=LABEL).astype(float).to_numpy()
    return matrix


# Real data ----------------------------------------------------------------------------------
def test_count_matrix_matches_pandas_crosstab(snow: pd.DataFrame) -> None:
    ours = encode(_triples(snow))
    reference = pd.crosstab(snow[ITEM], snow[LABEL]).loc[list(ours.item_ids), list(ours.labels)]
    np.testing.assert_array_equal(count_matrix(ours), reference.to_numpy())
    pivot = snow.pivot(index=ITEM, columns=WORKER, values=LABEL).loc[list(ours.item_ids), list(ours.annotator_ids)]
    codes = pivot.apply(lambda column: column.map({label: code for code, label in enumerate(ours.labels)}))
    np.testing.assert_array_equal(rating_matrix(ours), codes.to_numpy(dtype=float))


def test_fleiss_matches_statsmodels(snow: pd.DataFrame) -> None:
    ours = fleiss_kappa(count_matrix(encode(_triples(snow))))
    reference = statsmodels_fleiss(pd.crosstab(snow[ITEM], snow[LABEL]).to_numpy(), method="fleiss")
    assert ours == pytest.approx(reference, abs=1e-6)


def test_krippendorff_matches_package(snow: pd.DataFrame) -> None:
    ours = krippendorff_alpha(count_matrix(encode(_triples(snow))))
    reference = krippendorff.alpha(reliability_data=_reliability(snow), level_of_measurement="nominal")
    assert ours == pytest.approx(reference, abs=1e-6)


def test_krippendorff_with_ratings_missing_matches_package(snow: pd.DataFrame) -> None:
    """A third of the rows removed at random: 0 to 10 ratings per item, varying annotators."""
    thinned = snow.sample(frac=0.67, random_state=0)
    counts = count_matrix(encode(_triples(thinned)))
    assert counts.sum(axis=1).min() < counts.sum(axis=1).max()  # the case Fleiss cannot handle
    reference = krippendorff.alpha(reliability_data=_reliability(thinned), level_of_measurement="nominal")
    assert krippendorff_alpha(counts) == pytest.approx(reference, abs=1e-6)
    with pytest.raises(ValueError, match="krippendorff_alpha"):
        fleiss_kappa(counts)


def test_pairwise_kappa_matches_sklearn(snow: pd.DataFrame) -> None:
    """Every pair with enough shared items, each kappa from scikit-learn on the shared items."""
    # temp has many small overlaps; a higher threshold there also exercises min_shared.
    min_shared = 20 if snow.attrs["task"] == "temp" else 10
    pivot = snow.pivot(index=ITEM, columns=WORKER, values=LABEL)
    present = pivot.notna().to_numpy()
    values = pivot.to_numpy(dtype=object)  # plain arrays: indexing a DataFrame per pair is slow
    reference = {}
    for a, b in itertools.combinations(range(pivot.shape[1]), 2):
        both = present[:, a] & present[:, b]
        if both.sum() >= min_shared:
            with warnings.catch_warnings():  # sklearn warns on the pairs where kappa is undefined
                warnings.simplefilter("ignore")
                reference[(pivot.columns[a], pivot.columns[b])] = cohen_kappa_score(values[both, a], values[both, b])
    ours_annotations = encode(_triples(snow))
    ours = pairwise_cohen_kappa(rating_matrix(ours_annotations), min_shared=min_shared)
    names = ours_annotations.annotator_ids
    mapped = {tuple(sorted((str(names[a]), str(names[b])))): kappa for a, b, _, kappa in ours.pairs}
    assert mapped.keys() == reference.keys()
    for pair, kappa in reference.items():
        assert mapped[pair] == pytest.approx(kappa, abs=1e-6, nan_ok=True), pair
    assert ours.mean == pytest.approx(np.nanmean(list(reference.values())), abs=1e-6)
    assert ours.n_undefined == sum(np.isnan(list(reference.values())))


# Hand-built cases ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cohen_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    first = rng.choice(["neg", "neu", "pos"], 60)
    second = np.where(rng.random(60) < 0.6, first, rng.choice(["neg", "neu", "pos", "mixed"], 60))
    assert cohen_kappa(list(first), list(second)) == pytest.approx(cohen_kappa_score(first, second), abs=1e-6)


def test_cohen_undefined_and_misuse() -> None:
    assert np.isnan(cohen_kappa(["a", "a", "a"], ["a", "a", "a"]))  # chance agreement is already 1
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(cohen_kappa_score(["a", "b"], ["b", "a"]))
    with pytest.raises(ValueError, match="equal length"):
        cohen_kappa(["a"], ["a", "b"])


def test_fleiss_published_example() -> None:
    """Fleiss (1971) as tabulated on Wikipedia: 10 items, 14 raters, 5 categories, kappa 0.210."""
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)
    assert fleiss_kappa(table) == pytest.approx(statsmodels_fleiss(table), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_fleiss_random_tables_match_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    table = rng.multinomial(6, [0.5, 0.3, 0.15, 0.05], size=50)
    assert fleiss_kappa(table) == pytest.approx(statsmodels_fleiss(table), abs=1e-6)


def test_fleiss_needs_two_or_more_ratings() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        fleiss_kappa(np.array([[1, 0], [0, 1]]))


def test_krippendorff_textbook_example_with_missing() -> None:
    """Krippendorff (2011), 4 coders x 12 units with gaps: nominal alpha 0.743."""
    nan = np.nan
    data = np.array([[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
                     [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
                     [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
                     [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]])
    triples = [(unit, coder, int(data[coder, unit]))
               for coder in range(4) for unit in range(12) if not np.isnan(data[coder, unit])]
    ours = krippendorff_alpha(count_matrix(encode(triples)))
    assert ours == pytest.approx(0.743, abs=5e-4)
    assert ours == pytest.approx(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_krippendorff_random_missing_matches_package(seed: int) -> None:
    """Six coders, 40 units, 3 labels, ~45 % missing: some units have one rating or none."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, 40)
    data = np.where(rng.random((6, 40)) < 0.7, truth, rng.integers(0, 3, (6, 40))).astype(float)
    data[rng.random((6, 40)) < 0.45] = np.nan
    triples = [(unit, coder, int(data[coder, unit]))
               for coder in range(6) for unit in range(40) if not np.isnan(data[coder, unit])]
    counts = count_matrix(encode(triples))
    assert (counts.sum(axis=1) == 1).any()  # unpairable units are in the data and must be ignored
    reference = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert krippendorff_alpha(counts) == pytest.approx(reference, abs=1e-6)


def test_krippendorff_undefined_cases() -> None:
    assert np.isnan(krippendorff_alpha(np.array([[1, 0], [0, 1]])))  # nothing pairable
    assert np.isnan(krippendorff_alpha(np.array([[3, 0], [2, 0]])))  # one label only


def test_pairwise_kappa_threshold_and_values() -> None:
    """Three annotators; the pair that shares 2 items is excluded at min_shared=3."""
    labels = {0: "xyxyxyx", 1: "xyyyxyx", 2: "xy     "}  # column = item; blank = not labelled
    triples = [(item, who, text[item]) for who, text in labels.items() for item in range(7) if text[item] != " "]
    annotations = encode(triples)
    result = pairwise_cohen_kappa(rating_matrix(annotations), min_shared=3)
    assert [(a, b, n) for a, b, n, _ in result.pairs] == [(0, 1, 7)]
    assert result.mean == pytest.approx(cohen_kappa_score(list(labels[0]), list(labels[1])), abs=1e-6)
    assert pairwise_cohen_kappa(rating_matrix(annotations), min_shared=2).n_pairs == 3


def test_item_agreement_is_majority_share() -> None:
    shares = item_agreement(np.array([[3, 1, 0], [2, 2, 0], [0, 0, 1], [0, 0, 0]]))
    np.testing.assert_allclose(shares[:3], [0.75, 0.5, 1.0])
    assert np.isnan(shares[3])


def test_encode_orders_and_checks() -> None:
    annotations = encode([("i1", "ann", "10"), ("i1", "bob", "2"), ("i2", "ann", "9")])
    assert annotations.labels == ("2", "9", "10")  # numbers sort as numbers
    assert annotations.item_ids == ("i1", "i2") and annotations.annotator_ids == ("ann", "bob")
    assert natural_order(["b", "a", "10"]) == ["10", "a", "b"]
    with pytest.raises(DataError, match="labelled more than once.*'i1'.*'ann'"):
        encode([("i1", "ann", "x"), ("i1", "ann", "y")])
    with pytest.raises(DataError, match="not in the declared labels"):
        encode([("i1", "ann", "x")], labels=["y"])
