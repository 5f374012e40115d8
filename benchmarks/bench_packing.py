"""Sequence packing against padded batches on real instruction data (issue #8).

For each corpus, the examples are rendered with SmolLM2-135M-Instruct's chat template (loss on
the response only, raytune_llm.data.sft) and laid out three ways:
- padded: batches of `--batch` examples in a shuffled order, each padded to its longest;
- padded, length-grouped: the same after sorting by length (what `train.group_by_length`
  approximates; the best case for padding);
- packed: rows of `max_length` filled by best-fit decreasing (raytune_llm.data.packing).
It reports the share of real (non-padding) tokens of each, then times the training step
(`raytune_llm.train.causal.causal_lm_forward` + backward + AdamW) on the same examples padded
and packed, alternating one padded and one packed step so that load on the machine hits both
alike, and reports real tokens/s of each.

    python benchmarks/bench_packing.py --out benchmarks/results/packing.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from raytune_llm.data.formats.instruct import read_instructions
from raytune_llm.data.packing import PackedBatch, pack_examples, packed_batch, padded_batch
from raytune_llm.data.sft import Rendered, render_conversation
from raytune_llm.models.loading import load_tokenizer, resolve_model
from raytune_llm.train.causal import causal_lm_forward

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "instruct"


def render(tokenizer: Any, path: Path, max_length: int) -> tuple[list[Rendered], int]:
    """Usable examples of one corpus, and how many were left out (prompt longer than a row)."""
    table = read_instructions(str(path)).table
    out = [render_conversation(tokenizer, row["messages"], max_length) for row in table.to_pylist()]
    usable = [r for r in out if r.problem is None]
    return usable, len(out) - len(usable)


def shares(lengths: list[int], max_length: int, batch: int, seed: int) -> dict[str, float]:
    order = np.random.default_rng(seed).permutation(len(lengths))
    shuffled = [lengths[i] for i in order]

    def padded_slots(seq: list[int]) -> int:
        return sum(max(seq[i:i + batch]) * len(seq[i:i + batch]) for i in range(0, len(seq), batch))

    rows = pack_examples(lengths, max_length)
    real = sum(lengths)
    return {"examples": len(lengths), "real_tokens": real,
            "padded_share": real / padded_slots(shuffled),
            "grouped_share": real / padded_slots(sorted(lengths)),
            "packed_share": real / (len(rows) * max_length), "packed_rows": len(rows)}


def time_steps(model_path: str, examples: list[Rendered], max_length: int, batch: int, rows_per_step: int,
               seed: int, threads: int) -> dict[str, float]:
    """Real tokens/s of the training step, padded against packed, over the same examples."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_path, attn_implementation="sdpa")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = [e.input_ids for e in examples]
    labels = [e.labels for e in examples]
    order = np.random.default_rng(seed).permutation(len(examples)).tolist()
    pad = int(load_tokenizer(model_path).pad_token_id)
    padded = [padded_batch(order[i:i + batch], ids, labels, pad_id=pad) for i in range(0, len(order), batch)]
    rows = pack_examples([len(x) for x in ids], max_length)
    packed = [packed_batch(rows[i:i + rows_per_step], ids, labels, pad_id=pad, width=max_length)
              for i in range(0, len(rows), rows_per_step)]

    def step(b: PackedBatch) -> float:
        started = time.perf_counter()
        out, _ = causal_lm_forward(torch, model, b, "cpu")
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    step(packed[0])  # warm-up (allocator, first AdamW state)
    seconds = {"padded": 0.0, "packed": 0.0}
    slots = {"padded": 0, "packed": 0}
    for i in range(max(len(padded), len(packed))):  # alternate, so machine load hits both alike
        if i < len(padded):
            seconds["padded"] += step(padded[i])
            slots["padded"] += padded[i].input_ids.size
        if i < len(packed):
            seconds["packed"] += step(packed[i])
            slots["packed"] += packed[i].input_ids.size
    real = sum(len(x) for x in ids)
    return {"steps_padded": len(padded), "steps_packed": len(packed), "seconds_padded": seconds["padded"],
            "seconds_packed": seconds["packed"], "slots_padded": slots["padded"], "slots_packed": slots["packed"],
            "tokens_per_s_padded": real / seconds["padded"], "tokens_per_s_packed": real / seconds["packed"],
            "speedup": seconds["padded"] / seconds["packed"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:smollm2")
    parser.add_argument("--batch", type=int, default=8, help="examples per padded batch")
    parser.add_argument("--timed-examples", type=int, default=48, help="examples timed (seed tasks corpus)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    model_path = resolve_model(args.model)
    tokenizer = load_tokenizer(model_path)
    report: dict[str, Any] = {"model": args.model, "batch": args.batch, "date": time.strftime("%Y-%m-%d")}
    for name, file, max_length in (("alpaca_seed_tasks", "alpaca_seed_tasks.jsonl", 512), ("lima", "lima.json", 1024)):
        examples, left_out = render(tokenizer, SHARED / file, max_length)
        stats = shares([len(e.input_ids) for e in examples], max_length, args.batch, args.seed)
        report[name] = {"max_length": max_length, "left_out_prompt_too_long": left_out,
                        "truncated": sum(e.truncated for e in examples), **stats}
        print(name, json.dumps(report[name]), flush=True)
    examples, _ = render(tokenizer, SHARED / "alpaca_seed_tasks.jsonl", 512)
    subset = examples[: args.timed_examples]
    report["timing"] = {"corpus": "alpaca_seed_tasks", "examples": len(subset), "max_length": 512,
                        "threads": args.threads,
                        **time_steps(model_path, subset, 512, args.batch, 2, args.seed, args.threads)}
    print("timing", json.dumps(report["timing"]), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
