"""The prepare step wired into Ray Data: read, normalise, clean, split, tokenize, write.

Reading and checking run first on the driver so that a bad file fails before
any Ray work, and a rerun whose inputs and settings hash the same reuses the
earlier output without any. PII redaction, normalisation and tokenization run
as one Ray Data `map_batches` pass over a pool of actors; cleaning, splitting
and the leakage check need the whole table and run on the driver; the
tokenized splits are written once as Parquet under the run directory with a
manifest, and every trial reads those files.

Rows the reader quarantined are written to `prepared/quarantine.jsonl`, and the
manifest's `rows` balance: `read = kept + quarantined + dropped_*`.

Token classification (`data.task`) runs the same steps on sentences: its reader
(`run_input`), tag order and tokenizer actor (`tokens`, `tag_tokenize`) differ, and its
manifest adds entities per split and what truncation cut. With predefined split files
(`data.validation_path`) the held-out files are kept whole: only the training rows are
de-duplicated, and the leakage check removes training rows that repeat a held-out one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from raytune_llm.config.schema import RunConfig
from raytune_llm.data.cleaning import CONFLICTS_FILE, drop_leaks, drop_near_duplicates, pii_kinds, pop_pii_counts
from raytune_llm.data.quarantine import QUARANTINE_FILE, Quarantined, detach, kind_counts, write_quarantine
from raytune_llm.data.run_input import PREDEFINED_SPLIT, read_run_input
from raytune_llm.data.report import write_qa_report
from raytune_llm.data.transforms import (
    SPLITS,
    assign_splits,
    drop_empty_and_duplicates,
    label_counts,
    row_accounting,
)
from raytune_llm.errors import DataError

MANIFEST = "manifest.json"
TOKENIZE_LOG = "tokenize_passes.jsonl"
FORMAT_VERSION = 4  # bump when the written layout changes, so old shards are not reused


@dataclass(frozen=True)
class PreparedData:
    """Where the tokenized splits are, and what they hold."""

    root: Path
    labels: list[str]
    splits: dict[str, str]
    manifest: dict[str, Any]


def _fingerprint(raw: pa.Table, quarantine: list[Quarantined], cfg: RunConfig, model_path: str) -> str:
    """A hash of everything the prepared output depends on, computed before any Ray work."""
    digest = hashlib.sha256()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, raw.schema) as writer:
        writer.write_table(raw)
    digest.update(sink.getvalue().to_pybytes())
    # The quarantine is part of the output (quarantine.jsonl, the row counts), so it counts too.
    digest.update(json.dumps([q.as_dict() for q in quarantine], sort_keys=True).encode())
    # data.strict changes whether a run may start, never what it writes.
    settings = {"data": cfg.data.model_dump(mode="json", exclude={"path", "validation_path", "test_path", "num_shards",
                                                                  "strict", "tokenize_workers"}),
                "model": model_path, "version": FORMAT_VERSION}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def _label_order(cfg: RunConfig, raw: pa.Table) -> list[str]:
    if cfg.data.task == "token_classification":
        from raytune_llm.data.tokens import tag_order

        return tag_order((tag for tags in raw.column("tags").to_pylist() for tag in tags), cfg.data.labels,
                         cfg.data.path)
    if cfg.data.task == "generation" and cfg.data.format == "instruct":
        return []  # free answers: no label set
    labels = [str(label).strip() for label in raw.column("label").to_pylist()]
    found = sorted(set(labels))
    if cfg.data.labels is None:
        if len(found) < 2:
            raise DataError(f"{cfg.data.path}: only one label ({found}) in data.label_column "
                            f"'{cfg.data.label_column}'; a classifier needs at least 2")
        return found
    return list(cfg.data.labels)


def _load_manifest(root: Path, fingerprint: str) -> dict[str, Any] | None:
    path = root / MANIFEST
    if not path.exists():
        return None
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("fingerprint") != fingerprint:
        return None
    if not all((root / s).exists() for s in manifest["split_rows"]) or not (root / QUARANTINE_FILE).exists():
        return None
    return manifest


def _blocks(table: pa.Table, count: int) -> list[pa.Table]:
    """`table` cut into about `count` slices: Ray Data gives each block to one task or actor,
    so a single block would leave every worker but one idle."""
    size = max(1, -(-table.num_rows // max(1, count)))
    return [table.slice(start, size) for start in range(0, max(table.num_rows, 1), size)]


def _workers(cfg: RunConfig) -> int:
    return cfg.data.tokenize_workers or max(1, min(4, os.cpu_count() or 1))


def _transform_with_ray(raw: pa.Table, cfg: RunConfig, model_path: str, labels: list[str]) -> pa.Table:
    """Redact, normalise and tokenize every row in one pass over a pool of Ray Data actors.

    Each actor loads the tokenizer once and runs it single-threaded (TOKENIZERS_PARALLELISM
    is off), so actors, not threads, use the cores.
    """
    import ray
    import ray.data

    from raytune_llm.data.tag_tokenize import TagAndTokenize
    from raytune_llm.data.tokenize import NormalizeAndTokenize

    workers = _workers(cfg)
    actor: Any = TagAndTokenize if cfg.data.task == "token_classification" else NormalizeAndTokenize
    kwargs: dict[str, Any] = {"model_path": model_path, "max_length": cfg.data.max_length, "labels": labels,
                              "trust_remote_code": cfg.model.trust_remote_code, "pii_kinds": pii_kinds(cfg.data)}
    if cfg.data.task == "generation":
        from raytune_llm.data.gen_tokenize import RenderConversations

        actor = RenderConversations
        kwargs = {**kwargs, "template": cfg.data.prompt_template, "instruction": cfg.data.instruction}
        del kwargs["pii_kinds"]
    ds = ray.data.from_arrow(_blocks(raw, 4 * workers)).map_batches(
        actor, batch_format="pyarrow", batch_size=256 if cfg.data.task == "generation" else 2048,
        compute=ray.data.ActorPoolStrategy(size=workers), fn_constructor_kwargs=kwargs,
    )
    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


def _write_splits(kept: pa.Table, root: Path, cfg: RunConfig) -> None:
    """Each split as `data.num_shards` Parquet files.

    Written from the driver: token ids of an annotated corpus are small next to the model,
    and this gives exact shard counts at a fraction of the cost of Ray Data's write path on
    small inputs (measured: benchmarks/README.md).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for split in SPLITS:
        part = kept.filter(pc.equal(kept.column("split"), split))
        if part.num_rows == 0:
            continue
        (root / split).mkdir(parents=True, exist_ok=True)
        for index, shard in enumerate(_blocks(part, cfg.data.num_shards)):
            pq.write_table(shard, root / split / f"part-{index:05d}.parquet")


def prepare(cfg: RunConfig, run_dir: Path, model_path: str, raw: pa.Table | None = None) -> PreparedData:
    """Prepare (or reuse) the tokenized splits of `cfg` under `run_dir / "prepared"`.

    `raw` is what `read_records` returned (read here when not given); the quarantine it
    carries is written next to the splits.
    """
    root = run_dir / "prepared"
    raw, quarantine, read_stats = detach(read_run_input(cfg.data) if raw is None else raw)
    fingerprint = _fingerprint(raw, quarantine, cfg, model_path)
    manifest = _load_manifest(root, fingerprint)
    if manifest is not None:
        print(f"[prepare] inputs unchanged; reusing tokenized splits in {root}")
        _print_report(manifest, root)
        return PreparedData(root, manifest["labels"], {s: str(root / s) for s in manifest["split_rows"]}, manifest)

    if root.exists():
        import shutil

        shutil.rmtree(root)
    root.mkdir(parents=True)
    labels = _label_order(cfg, raw)
    started = time.perf_counter()
    table, pii = pop_pii_counts(_transform_with_ray(raw, cfg, model_path, labels))
    tokenize_seconds = time.perf_counter() - started
    table, unrenderable = _drop_unrenderable(table, root)
    kept, dropped = clean_and_split(table, cfg, root)
    dropped = {**dropped, **unrenderable}
    kept, leaks, leaks_by_split = drop_leaks(kept, cfg.data)
    dropped = {**dropped, "leak": leaks}
    rows = row_accounting(raw.num_rows + len(quarantine), kept.num_rows, len(quarantine), dropped)
    _write_splits(kept, root, cfg)
    # One line per tokenization pass over this run's data: the audit trail that trials and
    # reruns reuse the shards instead of tokenizing again.
    with (run_dir / TOKENIZE_LOG).open("a") as log:
        log.write(json.dumps({"fingerprint": fingerprint, "rows": kept.num_rows,
                              "at": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    write_quarantine(root / QUARANTINE_FILE, quarantine)
    manifest = _manifest(kept, labels, fingerprint, tokenize_seconds, cfg, model_path)
    manifest.update(rows=rows, quarantine={"file": QUARANTINE_FILE, "kinds": kind_counts(quarantine)},
                    read_stats=read_stats, pii_redacted=pii, leaks_by_split=leaks_by_split,
                    annotation_conflicts=CONFLICTS_FILE)
    # metadata: _source, agreement, votes/vote_share. Token rows: `label` is the entity types of a
    # sentence, not a tag, so the report lists the values found instead of the tag set.
    token_task = cfg.data.task == "token_classification"
    qa = write_qa_report(root, kept, {**manifest, "labels": []} if token_task else manifest)
    manifest["qa_report"] = {name: path.name for name, path in qa.items()}
    if cfg.data.task == "token_classification":
        from raytune_llm.data.tokens import token_stats

        manifest.update(token_stats(kept, labels))
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2))
    _print_report(manifest, root)
    return PreparedData(root, labels, {s: str(root / s) for s in manifest["split_rows"]}, manifest)


def _drop_unrenderable(table: pa.Table, root: Path) -> tuple[pa.Table, dict[str, int]]:
    """generation: set aside rows whose conversation could not be rendered (prompt longer than
    data.max_length, no template), listed with the reason in unrenderable.jsonl; a no-op otherwise."""
    import pyarrow.compute as pc

    if "render_problem" not in table.column_names:
        return table, {}
    bad = pc.invert(pc.is_null(table.column("render_problem")))
    rejected = table.filter(bad)
    if rejected.num_rows:
        with (root / "unrenderable.jsonl").open("w") as out:
            for row in rejected.select([c for c in ("id", "_source", "_line", "render_problem")
                                        if c in rejected.column_names]).to_pylist():
                out.write(json.dumps(row) + "\n")
    return table.filter(pc.invert(bad)).drop_columns(["render_problem"]), {"unrenderable": rejected.num_rows}


def clean_and_split(table: pa.Table, cfg: RunConfig, root: Path) -> tuple[pa.Table, dict[str, int]]:
    """Drop empty and (near-)duplicate rows, then add the `split` column (hashed, or from the files)."""
    import pyarrow.compute as pc

    if PREDEFINED_SPLIT not in table.column_names:
        kept, dropped = drop_empty_and_duplicates(table)
        kept, near = drop_near_duplicates(kept, cfg.data, root)
        splits = assign_splits(kept.column("id").to_pylist(), kept.column("label").to_pylist(),
                               cfg.data.split.model_dump(), cfg.data.seed)
        return kept.append_column("split", pa.array(splits.tolist(), pa.string())), {**dropped, **near}
    # Held-out files stay whole, so their scores compare with published ones on the same files.
    is_train = pc.equal(table.column(PREDEFINED_SPLIT), "train")
    train, dropped = drop_empty_and_duplicates(table.filter(is_train))
    train, near = drop_near_duplicates(train, cfg.data, root)
    kept = pa.concat_tables([train, table.filter(pc.invert(is_train))])
    return kept.rename_columns(["split" if c == PREDEFINED_SPLIT else c for c in kept.column_names]), {**dropped, **near}


def _manifest(kept: pa.Table, labels: list[str], fingerprint: str, seconds: float, cfg: RunConfig,
              model_path: str) -> dict[str, Any]:
    split_col = kept.column("split").to_pylist()
    label_col = kept.column("label").to_pylist()
    per_split = {s: label_counts(l for l, x in zip(label_col, split_col) if x == s) for s in SPLITS}
    return {
        "fingerprint": fingerprint,
        "format_version": FORMAT_VERSION,
        "source": cfg.data.path,
        "model": model_path,
        "labels": labels,
        "split_rows": {s: sum(c.values()) for s, c in per_split.items() if sum(c.values()) > 0},
        "split_labels": per_split,
        "tokenize_seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _print_report(manifest: dict[str, Any], root: Path) -> None:
    rows = manifest["rows"]
    dropped = ", ".join(f"{k.removeprefix('dropped_')} {v}" for k, v in rows.items() if k.startswith("dropped_"))
    print(f"[prepare] read {rows['read']} rows = kept {rows['kept']} + quarantined {rows['quarantined']} "
          f"+ dropped ({dropped})")
    if rows["quarantined"]:
        kinds = ", ".join(f"{k} {v}" for k, v in manifest["quarantine"]["kinds"].items())
        print(f"[prepare] quarantined rows ({kinds}): {root / manifest['quarantine']['file']}")
    for split, count in manifest["split_rows"].items():
        # token rows: entities per type instead of the (many) per-sentence entity-type sets
        counts = manifest["split_entities"][split] if "split_entities" in manifest else manifest["split_labels"][split]
        print(f"[prepare]   {split:<10} {count:>6} rows  {counts}")
    if "truncation" in manifest:
        cut = manifest["truncation"]
        print(f"[prepare] truncation (data.max_length): {cut['rows_truncated']} sentences lost "
              f"{cut['words_truncated']} words (scored as O); {cut['words_without_subtokens']} words had no sub-token")
    print(f"[prepare] tokenized splits written to {root}")
    if "qa_report" in manifest:
        print(f"[prepare] data QA report: {root / 'qa_report.md'}")
