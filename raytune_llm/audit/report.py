"""What `raytune-llm audit` writes: the ranked flags (CSV, JSONL), every row's out-of-sample
probabilities (Parquet), the numbers (JSON), a short Markdown summary and the Label Studio tasks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raytune_llm.audit.review import write_review_tasks
from raytune_llm.config.schema import RunConfig

if TYPE_CHECKING:
    from raytune_llm.audit.run import AuditResult

__all__ = ["flagged_rows", "write_reports"]

# Columns of the prepared shards that are bookkeeping, not something a reviewer needs to see.
_INTERNAL = frozenset({"id", "text", "label", "label_id", "input_ids", "num_tokens", "split", "source_id",
                       "_source", "_line"})


def flagged_rows(result: AuditResult) -> list[dict[str, Any]]:
    """The flagged rows, most likely wrong first, as plain dicts (the CSV/JSONL/Label Studio rows)."""
    issues, labels, probs = result.issues, result.labels, result.pred_probs
    columns = {name: result.rows.column(name).to_pylist() for name in result.rows.column_names
               if name not in ("input_ids",)}
    extra = [name for name in result.rows.column_names if name not in _INTERNAL]
    out = []
    for rank, index in enumerate(issues.ranked.tolist(), start=1):
        suggested = int(issues.suggested[index])
        out.append({
            "rank": rank, "id": columns["id"][index], "text": columns["text"][index],
            "given_label": labels[int(columns["label_id"][index])], "suggested_label": labels[suggested],
            "confidence": round(float(probs[index, suggested]), 6),
            "given_label_probability": round(float(issues.self_confidence[index]), 6),
            "margin": round(float(issues.margin[index]), 6), "fold": int(result.folds[index]),
            "source": columns.get("_source", [None] * len(probs))[index],
            "line": columns.get("_line", [None] * len(probs))[index],
            **{name: columns[name][index] for name in extra},
        })
    return out


def _probabilities_table(result: AuditResult) -> pa.Table:
    """One row per audited row: id, given label, fold, P(class) columns, suggestion and flag."""
    issues = result.issues
    table = pa.table({
        "id": result.rows.column("id"), "label": result.rows.column("label"),
        "fold": pa.array(result.folds, pa.int64()),
        **{f"p_{name}": pa.array(result.pred_probs[:, j], pa.float64()) for j, name in enumerate(result.labels)},
        "suggested_label": pa.array([result.labels[s] if s >= 0 else None for s in issues.suggested.tolist()],
                                    pa.string()),
        "flagged": pa.array(issues.flagged, pa.bool_()),
    })
    return table


def _numbers(result: AuditResult, flagged: list[dict[str, Any]]) -> dict[str, Any]:
    issues, labels = result.issues, result.labels
    given = result.rows.column("label").to_pylist()
    return {
        "rows_audited": len(given), "folds": int(result.folds.max()) + 1, "flagged": len(flagged),
        "flagged_share": round(len(flagged) / max(len(given), 1), 6),
        "thresholds": {name: float(t) for name, t in zip(labels, issues.thresholds)},
        "confident_joint": {"rows_given": labels, "columns_confident": labels,
                            "counts": issues.confident_joint.tolist()},
        "no_class_confident": int(np.sum(issues.suggested < 0)),
        "flagged_by_pair": {f"{g} -> {s}": n for (g, s), n in sorted(Counter(
            (row["given_label"], row["suggested_label"]) for row in flagged).items())},
        "given_labels": dict(sorted(Counter(given).items())),
        "oos_accuracy": float(np.mean(result.pred_probs.argmax(axis=1)
                                      == result.rows.column("label_id").to_numpy())),
        "per_fold": result.fold_stats, "seconds": round(result.seconds, 1),
    }


def _markdown(numbers: dict[str, Any], flagged: list[dict[str, Any]], labels: list[str], cfg: RunConfig,
              paths: dict[str, Path]) -> str:
    lines = [
        "# Label-error audit", "",
        f"Data: `{cfg.data.path}` (training split). {numbers['rows_audited']} rows, {numbers['folds']} folds, "
        f"{cfg.train.epochs} epoch(s) per fold, model `{cfg.model.name_or_path}`.",
        f"Out-of-sample accuracy against the given labels: {numbers['oos_accuracy']:.4f}.", "",
        f"**{numbers['flagged']} rows flagged ({100 * numbers['flagged_share']:.1f} %)**: another class reaches "
        "its confident-learning threshold (and beats the given label), so the given label is probably wrong.", "",
        "| class | threshold t_j (mean P(j) over rows labelled j) | rows labelled |", "|---|---|---|",
        *[f"| {name} | {numbers['thresholds'][name]:.4f} | {numbers['given_labels'].get(name, 0)} |" for name in labels],
        "", "Confident joint (rows: given label; columns: class confidently predicted):", "",
        "| given \\ confident | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels),
        *[f"| {name} | " + " | ".join(str(c) for c in row) + " |"
          for name, row in zip(labels, numbers["confident_joint"]["counts"])],
        "", "| fold | train rows | held-out rows | held-out accuracy | last val F1 | seconds |", "|---|---|---|---|---|---|",
        *[f"| {s['fold']} | {s['train_rows']} | {s['held_out_rows']} | {s['held_out_accuracy']:.4f} | "
          f"{(s['val_f1'] if s['val_f1'] is not None else float('nan')):.4f} | {s['train_seconds']} |"
          for s in numbers["per_fold"]],
        "", "Most likely errors (all of them in the CSV/JSONL):", "",
        "| rank | given | suggested | P(suggested) | P(given) | source | text |", "|---|---|---|---|---|---|---|",
    ]
    for row in flagged[:15]:
        where = f"{row['source']}:{row['line']}" if row["source"] else ""
        text = str(row["text"]).replace("|", "\\|")
        text = text if len(text) <= 100 else text[:97] + "..."
        lines.append(f"| {row['rank']} | {row['given_label']} | {row['suggested_label']} | {row['confidence']:.3f} "
                     f"| {row['given_label_probability']:.3f} | {where} | {text} |")
    lines += ["", "Files:", *[f"- {name}: `{path.name}`" for name, path in paths.items()], "",
              "Review in Label Studio: create a project with `labelstudio_config.xml` as its labeling interface, "
              "import `labelstudio_tasks.json` (the current label is pre-filled as a prediction), export the "
              "reviewed tasks as JSON and read them back with `data.format=labelstudio data.id_column=row_id`.", ""]
    return "\n".join(lines)


def write_reports(result: AuditResult, cfg: RunConfig) -> dict[str, Path]:
    """Write every audit output under `result.out_dir`; returns name -> path."""
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    flagged = flagged_rows(result)
    paths = {"flagged_csv": out / "label_issues.csv", "flagged_jsonl": out / "label_issues.jsonl",
             "probabilities": out / "oos_probabilities.parquet", "numbers": out / "audit.json"}
    import pandas as pd

    frame = pd.DataFrame(flagged, columns=list(flagged[0]) if flagged else
                         ["rank", "id", "text", "given_label", "suggested_label", "confidence",
                          "given_label_probability", "margin", "fold", "source", "line"])
    frame.to_csv(paths["flagged_csv"], index=False)
    paths["flagged_jsonl"].write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in flagged),
                                      encoding="utf-8")
    pq.write_table(_probabilities_table(result), paths["probabilities"])
    paths.update(write_review_tasks(flagged, result.labels, out))
    numbers = _numbers(result, flagged)
    paths["numbers"].write_text(json.dumps(numbers, indent=2))
    paths["summary"] = out / "audit_summary.md"
    paths["summary"].write_text(_markdown(numbers, flagged, result.labels, cfg, paths), encoding="utf-8")
    return paths
