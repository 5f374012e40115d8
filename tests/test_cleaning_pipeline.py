"""`prepare` end to end with the cleaning steps on: PII, near-duplicates, conflicts, leakage.

Real Ray Data, the real MiniLM tokenizer; the corpus is written here. Every row read is
kept, quarantined or dropped with a reason, and the counts balance.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raytune_llm import app
from raytune_llm.data.near_dup import leakage
from tests.conftest import write_config

pytestmark = pytest.mark.usefixtures("local_ray")

_SUBJECTS = ["The courier", "My invoice", "The mobile app", "Our warehouse", "The refund", "A parcel",
             "The login page", "The billing team", "Support", "The tracking page"]
_VERBS = ["arrived late on", "was charged twice for", "crashed while opening", "never updated after",
          "showed an error about", "got stuck in", "was cancelled before", "took three weeks for"]
_OBJECTS = ["order number {n}", "the spring sale", "my second account", "the express option",
            "a replacement laptop", "the annual plan", "the damaged box", "the gift voucher"]
_LABELS = ["billing", "technical", "shipping"]


def _corpus(path: Path) -> dict[str, int]:
    rng = random.Random(7)
    rows, base = [], []
    for n in range(240):
        # Made-up words keep any two base texts far apart (character 5-gram Jaccard well below 0.8).
        words = " ".join("".join(rng.choice("bcdfgklmnprstvz") + rng.choice("aeiou") for _ in range(3))
                         for _ in range(6))
        text = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS).format(n=n)}: {words} (case {n})."
        base.append((text, _LABELS[n % 3]))
    rows += [{"text": t, "label": l} for t, l in base]
    # 30 near-copies with the same label (one character changed): dropped as near duplicates.
    rows += [{"text": t.replace("(case", "(Case"), "label": l} for t, l in base[:30]]
    # 20 near-copies with another label: annotation conflicts. keep_all keeps both, so some pairs
    # straddle train and a held-out split, and those train rows must go.
    rows += [{"text": t.replace(").", ")!"), "label": _LABELS[(_LABELS.index(l) + 1) % 3]} for t, l in base[30:50]]
    # PII to redact.
    rows += [{"text": f"Please mail me at jane.doe{n}@example.org about {base[60 + n][0]}", "label": "shipping"}
             for n in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"rows": len(rows), "emails": 6}


def test_cleaning_steps_balance_and_leave_no_leak(tmp_path: Path, tiny_model_dir: Path) -> None:
    facts = _corpus(tmp_path / "tickets.jsonl")
    config = write_config(tmp_path / "run.yaml", tmp_path / "tickets.jsonl", tiny_model_dir, tmp_path / "runs")
    prepared = app.run_prepare(str(config), ["data.conflict_policy=keep_all", "data.redact_pii=true"])
    rows = prepared.manifest["rows"]
    assert rows["read"] == facts["rows"]
    assert rows["read"] == rows["kept"] + rows["quarantined"] + sum(v for k, v in rows.items() if k.startswith("dropped_"))
    assert rows["dropped_near_duplicate"] == 30
    assert rows["dropped_leak"] > 0
    assert prepared.manifest["pii_redacted"]["email"] == facts["emails"]
    conflicts = [json.loads(line) for line in (prepared.root / "annotation_conflicts.jsonl").read_text().splitlines()]
    assert len(conflicts) == 20 and all(len(set(c["labels"])) == 2 for c in conflicts)

    texts = {s: pq.read_table(p, columns=["text"]).column("text").to_pylist() for s, p in prepared.splits.items()}
    assert not any("@example.org" in t for split in texts.values() for t in split)
    assert sum("[EMAIL]" in t for split in texts.values() for t in split) == facts["emails"]
    assert not leakage(texts["train"], texts["validation"] + texts.get("test", []), 0.8)
    assert sum(len(v) for v in texts.values()) == rows["kept"]


def test_near_dup_off_keeps_near_copies(tmp_path: Path, tiny_model_dir: Path) -> None:
    facts = _corpus(tmp_path / "tickets.jsonl")
    config = write_config(tmp_path / "run.yaml", tmp_path / "tickets.jsonl", tiny_model_dir, tmp_path / "runs")
    rows = app.run_prepare(str(config), ["data.near_dup_threshold=null", "output.name=nodedup"]).manifest["rows"]
    assert rows["dropped_near_duplicate"] == 0 and rows["dropped_leak"] == 0
    assert rows["kept"] == facts["rows"]
