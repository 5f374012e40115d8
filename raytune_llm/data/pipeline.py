"""The prepare step wired into Ray Data: read, normalise, clean, split, tokenize, write.

Reading and checking run first on the driver so that a bad file fails before
any Ray work. Normalisation and tokenization run as Ray Data `map_batches`
stages; the tokenized splits are written once as Parquet under the run
directory with a manifest, and every trial reads those files. A rerun whose
inputs and settings hash the same reuses them instead of tokenizing again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from raytune_llm.config.schema import RunConfig
from raytune_llm.data.readers import read_records
from raytune_llm.data.transforms import SPLITS, assign_splits, drop_empty_and_duplicates, label_counts, normalize_batch
from raytune_llm.errors import DataError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1  # bump when the written layout changes, so old shards are not reused


@dataclass(frozen=True)
class PreparedData:
    """Where the tokenized splits are, and what they hold."""

    root: Path
    labels: list[str]
    splits: dict[str, str]
    manifest: dict[str, Any]


def _fingerprint(table: pa.Table, cfg: RunConfig, model_path: str) -> str:
    digest = hashlib.sha256()
    content = table.select(["id", "text", "label"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, content.schema) as writer:
        writer.write_table(content)
    digest.update(sink.getvalue().to_pybytes())
    settings = {"data": cfg.data.model_dump(mode="json", exclude={"path", "num_shards"}),
                "model": model_path, "version": FORMAT_VERSION}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def _label_order(cfg: RunConfig, labels: list[str]) -> list[str]:
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
    manifest = json.loads(path.read_text())
    if manifest.get("fingerprint") != fingerprint:
        return None
    if not all((root / s).exists() for s in manifest["split_rows"]):
        return None
    return manifest


def _normalise_with_ray(table: pa.Table) -> pa.Table:
    import ray
    import ray.data

    ds = ray.data.from_arrow(table).map_batches(normalize_batch, batch_format="pyarrow", batch_size=4096)
    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


def _tokenize_and_write(table: pa.Table, root: Path, cfg: RunConfig, model_path: str, labels: list[str]) -> None:
    import ray.data

    from raytune_llm.data.tokenize import BatchTokenizer

    ds = ray.data.from_arrow(table).map_batches(
        BatchTokenizer, batch_format="pyarrow", batch_size=1024, concurrency=1,
        fn_constructor_kwargs={"model_path": model_path, "max_length": cfg.data.max_length,
                               "labels": labels, "trust_remote_code": cfg.model.trust_remote_code},
    )
    ds = ds.materialize()
    for split in SPLITS:
        part = ds.filter(expr=f"split == '{split}'")
        part.repartition(cfg.data.num_shards).write_parquet(str(root / split))


def prepare(cfg: RunConfig, run_dir: Path, model_path: str, raw: pa.Table | None = None) -> PreparedData:
    """Prepare (or reuse) the tokenized splits of `cfg` under `run_dir / "prepared"`."""
    root = run_dir / "prepared"
    raw = read_records(cfg.data) if raw is None else raw
    table = _normalise_with_ray(raw)
    fingerprint = _fingerprint(table, cfg, model_path)
    manifest = _load_manifest(root, fingerprint)
    if manifest is not None:
        print(f"[prepare] inputs unchanged; reusing tokenized splits in {root}")
        return PreparedData(root, manifest["labels"], {s: str(root / s) for s in manifest["split_rows"]}, manifest)

    kept, dropped = drop_empty_and_duplicates(table)
    labels = _label_order(cfg, kept.column("label").to_pylist())
    fractions = cfg.data.split.model_dump()
    splits = assign_splits(kept.column("id").to_pylist(), kept.column("label").to_pylist(), fractions, cfg.data.seed)
    kept = kept.append_column("split", pa.array(splits.tolist(), pa.string()))
    started = time.perf_counter()
    if root.exists():
        import shutil

        shutil.rmtree(root)
    root.mkdir(parents=True)
    _tokenize_and_write(kept, root, cfg, model_path, labels)
    manifest = _manifest(raw, kept, dropped, labels, fingerprint, time.perf_counter() - started, cfg, model_path)
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2))
    _print_report(manifest, root)
    return PreparedData(root, labels, {s: str(root / s) for s in manifest["split_rows"]}, manifest)


def _manifest(raw: pa.Table, kept: pa.Table, dropped: dict[str, int], labels: list[str], fingerprint: str,
              seconds: float, cfg: RunConfig, model_path: str) -> dict[str, Any]:
    split_col = kept.column("split").to_pylist()
    label_col = kept.column("label").to_pylist()
    per_split = {s: label_counts(l for l, x in zip(label_col, split_col) if x == s) for s in SPLITS}
    return {
        "fingerprint": fingerprint,
        "format_version": FORMAT_VERSION,
        "source": cfg.data.path,
        "model": model_path,
        "labels": labels,
        "rows": {"read": raw.num_rows, "kept": kept.num_rows, **{f"dropped_{k}": v for k, v in dropped.items()}},
        "split_rows": {s: sum(c.values()) for s, c in per_split.items() if sum(c.values()) > 0},
        "split_labels": per_split,
        "tokenize_seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _print_report(manifest: dict[str, Any], root: Path) -> None:
    rows = manifest["rows"]
    dropped = ", ".join(f"{k.removeprefix('dropped_')} {v}" for k, v in rows.items() if k.startswith("dropped_"))
    print(f"[prepare] read {rows['read']} rows = kept {rows['kept']} + dropped ({dropped})")
    for split, count in manifest["split_rows"].items():
        print(f"[prepare]   {split:<10} {count:>6} rows  {manifest['split_labels'][split]}")
    print(f"[prepare] tokenized splits written to {root}")
