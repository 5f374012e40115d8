"""`raytune-llm audit` end to end: real Ray Train + DeepSpeed folds on a tiny BERT, a corpus with
labels flipped on purpose, confident-learning flags, and the Label Studio tasks it writes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from raytune_llm.audit.folds import assign_folds
from raytune_llm.audit.run import run_audit
from tests.conftest import write_config

pytestmark = pytest.mark.usefixtures("local_ray")

# Two classes: a 2-layer, 32-wide BERT from random weights learns them reliably in a few epochs
# (with three it often stalls merging two of them); the three-class maths is checked in test_audit_math.py.
_WORDS = {"red": ["apple", "cherry", "tomato", "ruby"], "blue": ["ocean", "sky", "whale", "ice"]}
_FILLER = ["the", "a", "one", "my", "this", "our", "some", "big", "small", "old"]


def _corpus(path: Path, rows_per_label: int = 90, flip_share: float = 0.1) -> set[str]:
    """Short texts whose words give the class away; returns the ids whose label was flipped."""
    rng = random.Random(7)
    lines, flipped = [], set()
    names = sorted(_WORDS)
    for label in names:
        for n in range(rows_per_label):
            words = rng.sample(_WORDS[label], 2)
            given, row_id = label, f"{label}-{n}"
            if rng.random() < flip_share:
                given = rng.choice([x for x in names if x != label])
                flipped.add(row_id)
            lines.append(json.dumps({"id": row_id, "text": f"{rng.choice(_FILLER)} {words[0]} {words[1]} {n}",
                                     "label": given}))
    path.write_text("\n".join(lines) + "\n")
    return flipped


@pytest.mark.slow
def test_audit_flags_the_flipped_labels(tmp_path: Path, tiny_model_dir: Path) -> None:
    flipped = _corpus(tmp_path / "colours.jsonl")
    config = write_config(tmp_path / "run.yaml", tmp_path / "colours.jsonl", tiny_model_dir, tmp_path / "runs")
    result = run_audit(str(config), ["data.id_column=id", "data.near_dup_threshold=null", "train.zero_stage=0",
                                     "train.epochs=5", "train.learning_rate=0.003", "data.split.validation=0.1", "data.split.test=0.2"],
                       folds=3, out_dir=str(tmp_path / "audit"))
    train_ids = sorted(pq.read_table(tmp_path / "runs" / "test" / "prepared" / "train").column("id").to_pylist())
    # Every training row got exactly one out-of-sample prediction, from the fold that held it out.
    oos = pq.read_table(result.paths["probabilities"]).to_pandas()
    assert sorted(oos["id"]) == train_ids and oos["id"].is_unique
    assert sorted(oos["fold"].unique()) == [0, 1, 2]
    probs = oos[["p_blue", "p_red"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    for fold in range(3):
        held = set(pq.read_table(tmp_path / "audit" / "folds" / f"fold_{fold}" / "held_out").column("id").to_pylist())
        trained = set(pq.read_table(tmp_path / "audit" / "folds" / f"fold_{fold}" / "train").column("id").to_pylist())
        assert held == set(oos.loc[oos["fold"] == fold, "id"]) and not held & trained
        assert held | trained == set(train_ids)
    # The flags are the flipped rows, give or take a few.
    flagged = set(oos.loc[oos["flagged"], "id"])
    wrong = flipped & set(train_ids)
    assert len(wrong) >= 8, "the corpus should hold some flipped training rows"
    hits = len(flagged & wrong)
    assert hits / len(flagged) >= 0.6 and hits / len(wrong) >= 0.6, (sorted(flagged), sorted(wrong))
    # The ranked CSV/JSONL and the Label Studio tasks hold the same rows, most likely wrong first.
    ranked = [json.loads(line) for line in result.paths["flagged_jsonl"].read_text().splitlines()]
    assert [r["id"] for r in ranked] == [result.rows.column("id")[int(i)].as_py() for i in result.issues.ranked]
    assert {r["id"] for r in ranked} == flagged
    assert all(r["given_label"] != r["suggested_label"] and r["confidence"] > r["given_label_probability"]
               for r in ranked)
    assert [r["given_label_probability"] for r in ranked] == sorted(r["given_label_probability"] for r in ranked)
    assert all(r["source"].endswith("colours.jsonl") and r["line"] >= 1 for r in ranked)
    tasks = json.loads(result.paths["labelstudio_tasks"].read_text())
    assert [t["data"]["row_id"] for t in tasks] == [r["id"] for r in ranked]
    summary = result.paths["summary"].read_text()
    assert f"**{len(flagged)} rows flagged" in summary


def test_folds_are_seeded_stratified_and_order_free() -> None:
    ids = [f"row{i}" for i in range(103)]
    labels = [i % 3 for i in range(103)]
    folds = assign_folds(ids, labels, 4, seed=5)
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3]
    for label in range(3):
        counts = np.bincount(folds[np.array(labels) == label], minlength=4)
        assert counts.max() - counts.min() <= 1
    order = list(reversed(range(103)))
    again = assign_folds([ids[i] for i in order], [labels[i] for i in order], 4, seed=5)
    assert again.tolist() == [folds[i] for i in order]
    assert assign_folds(ids, labels, 4, seed=6).tolist() != folds.tolist()
