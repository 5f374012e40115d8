"""`raytune-llm bench data`: the prepare step against Hugging Face `datasets`, same rows, one run.

Both sides do the same work on the same input file: read it, normalise the text with
the same function, drop empty and repeated rows, assign the same stratified splits,
tokenize with the same fast tokenizer (batched, same truncation) and write one Parquet
folder per split. Ray's start-up is not timed (a cluster is started once and serves
many runs); the near-duplicate and leakage pass, which `datasets` has no counterpart
for, is timed separately so the comparison stays like for like.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any


def _ours(config_path: str, overrides: list[str], address: str | None, workers: int, near_dup: bool,
          scratch: Path) -> tuple[float, int]:
    """Seconds for read + prepare (Ray already running), and the rows written."""
    from raytune_llm.app import preflight
    from raytune_llm.data.pipeline import prepare

    extra = [f"data.tokenize_workers={workers}", f"output.dir={scratch}", f"output.name=ours-{workers}-{near_dup}"]
    if not near_dup:
        extra.append("data.near_dup_threshold=null")
    started = time.perf_counter()
    session = preflight(config_path, [*overrides, *extra])
    prepared = prepare(session.cfg, session.run_dir, session.model_path, raw=session.raw)
    return time.perf_counter() - started, sum(prepared.manifest["split_rows"].values())


def _hf_load(cfg: Any) -> Any:
    """The input through `datasets`' own loader where it has one; else our reader's rows."""
    import datasets

    from raytune_llm.data.sources import format_of, resolve_files

    files = [f.path for f in resolve_files(cfg.path)]
    fmt, _ = format_of(files[0], cfg)
    builder = {"jsonl": "json", "csv": "csv", "tsv": "csv", "parquet": "parquet"}.get(fmt)
    if builder is None:
        from raytune_llm.data.readers import read_records

        return datasets.Dataset(read_records(cfg).select(["text", "label"]))
    kwargs = {"delimiter": "\t"} if fmt == "tsv" else {}
    ds = datasets.load_dataset(builder, data_files=files, split="train", keep_in_memory=True, **kwargs)
    return ds.select_columns([cfg.text_column, cfg.label_column]).rename_columns(
        {cfg.text_column: "text", cfg.label_column: "label"} if cfg.text_column != "text" else {})


def _hf(cfg: Any, model_path: str, out: Path, workers: int) -> tuple[float, int]:
    """The same work with `datasets.map(batched=True)`; seconds and rows written."""
    import datasets

    from raytune_llm.data.transforms import assign_splits, normalize_text, stable_id
    from raytune_llm.models.loading import load_tokenizer

    datasets.disable_caching()
    started = time.perf_counter()
    ds = _hf_load(cfg)
    ds = ds.map(lambda b: {"text": [normalize_text(t) for t in b["text"]],
                           "label": [str(x).strip() for x in b["label"]]}, batched=True, num_proc=None)
    ds = ds.map(lambda b: {"id": [stable_id(t) for t in b["text"]]}, batched=True)
    seen: set[str] = set()

    def first_non_empty(batch: dict[str, list[Any]]) -> list[bool]:
        keep = []
        for row_id, text in zip(batch["id"], batch["text"]):
            keep.append(bool(text) and row_id not in seen)
            seen.add(row_id)
        return keep

    ds = ds.filter(first_non_empty, batched=True)
    splits = assign_splits(ds["id"], ds["label"], cfg.split.model_dump(), cfg.seed)
    ds = ds.add_column("split", splits.tolist())
    tokenizer = load_tokenizer(model_path, False)
    labels = {label: i for i, label in enumerate(sorted(set(ds["label"])))}
    ds = ds.map(lambda b: {**tokenizer(b["text"], truncation=True, max_length=cfg.max_length),
                           "label_id": [labels[x] for x in b["label"]]},
                batched=True, batch_size=1024, num_proc=workers if workers > 1 else None)
    written = 0
    for split in ("train", "validation", "test"):
        part = ds.filter(lambda b, s=split: [x == s for x in b["split"]], batched=True)
        (out / split).mkdir(parents=True, exist_ok=True)
        part.to_parquet(str(out / split / "part-0.parquet"))
        written += part.num_rows
    return time.perf_counter() - started, written


def run_bench_data(config_path: str, overrides: list[str], address: str | None, *, workers: list[int],
                   out_dir: str | None) -> dict[str, Any]:
    """Time our prepare and the `datasets` equivalent at each worker count; write JSON and Markdown."""
    from raytune_llm.app import preflight
    from raytune_llm.runtime import ensure_ray

    session = preflight(config_path, overrides)
    ensure_ray(session.cfg.train, address)  # started before timing: not part of either pipeline
    rows_in = session.raw.num_rows
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for count in workers:
            ours, ours_rows = _ours(config_path, overrides, address, count, False, scratch)
            hf, hf_rows = _hf(session.cfg.data, session.model_path, scratch / f"hf-{count}", count)
            results.append({"workers": count, "raytune_llm_seconds": ours, "datasets_seconds": hf,
                            "speedup_vs_datasets": hf / ours, "rows_written": ours_rows, "datasets_rows": hf_rows})
            print(f"[bench data] {count} worker(s): raytune_llm {ours:.1f} s, datasets {hf:.1f} s, "
                  f"ratio {hf / ours:.2f}x", flush=True)
        near, _ = _ours(config_path, overrides, address, max(workers), True, scratch)
    result = {"config": config_path, "overrides": overrides, "rows_read": rows_in, "runs": results,
              "with_near_dup_and_leakage_seconds": near, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    target = Path(out_dir) if out_dir else session.run_dir / "bench"
    target.mkdir(parents=True, exist_ok=True)
    with (target / "bench_data.jsonl").open("a") as stream:
        stream.write(json.dumps(result) + "\n")
    table = markdown_table(result)
    with (target / "bench_data.md").open("a") as stream:
        stream.write(table + "\n")
    print(table)
    shutil.rmtree(session.run_dir / "prepared", ignore_errors=True)
    return result


def markdown_table(result: dict[str, Any]) -> str:
    """The people's version of one `bench data` run."""
    lines = [f"## {result['created']} — prepare vs `datasets`, {result['rows_read']} rows read", "",
             "| workers | raytune_llm prepare s | datasets s | datasets / raytune_llm | rows written (ours / datasets) |",
             "|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['workers']} | {r['raytune_llm_seconds']:.1f} | {r['datasets_seconds']:.1f} | "
                     f"{r['speedup_vs_datasets']:.2f}× | {r['rows_written']} / {r['datasets_rows']} |")
    lines += ["", f"With near-duplicate removal and the leakage check on (no `datasets` counterpart): "
              f"{result['with_near_dup_and_leakage_seconds']:.1f} s."]
    return "\n".join(lines) + "\n"
