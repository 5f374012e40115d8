"""Checkpoints that are plain `save_pretrained` folders.

Every checkpoint a trial reports is a complete Hugging Face folder (config,
weights, tokenizer) plus `raytune_llm.json` with the labels and the metrics of
that epoch, so the best one can be exported by copying it and loaded later
with plain `transformers`, no raytune_llm needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METADATA_FILE = "raytune_llm.json"


def full_state_dict(engine: Any, zero_stage: int, rank: int) -> dict[str, Any] | None:
    """The module's full state dict on rank 0 (None elsewhere), gathering ZeRO-3 shards."""
    module = engine.module
    if zero_stage == 3:
        import deepspeed

        # Every rank must enter the gather; only rank 0 keeps a copy.
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()} if rank == 0 else None
        return state
    return {k: v.detach().cpu() for k, v in module.state_dict().items()} if rank == 0 else None


def write_checkpoint(
    folder: Path, module: Any, state_dict: dict[str, Any], tokenizer: Any, metadata: dict[str, Any]
) -> None:
    """Write a loadable HF folder with our metadata next to it."""
    module.save_pretrained(str(folder), state_dict=state_dict, safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """Labels, epoch and metrics stored beside a checkpoint."""
    return json.loads((Path(folder) / METADATA_FILE).read_text())
