"""Build the two git-ignored folders that run_gpu_checks.sh needs on the lent GPU machine.

    python benchmarks/gpu/prepare_carry.py            # from the repository root, with the project's venv

.whl/         wheels for the device's Python 3.12 (x86-64) of what its image lacks: ray (without
              ray/jars, the Java jar, and the dashboard's source maps, so the carried tree stays
              under 64 MiB), deepspeed (pure Python: DS_BUILD_OPS=0), and the runtime dependencies
              of ray[default,train,tune,data], deepspeed and raytune_llm missing there. protobuf and
              typing_extensions are carried too: pydantic needs typing_extensions >= 4.16 and
              googleapis-common-protos protobuf >= 6.33.5, newer than the image may hold.
.gpu_assets/  SmolLM2's tokenizer files (from the converted builtin:smollm2 folder) and
              long_instruct.jsonl: LIMA answers (../shared/data/instruct/lima.json) joined into 337
              examples of more than 1,100 tokens each, so data.max_length=1024 cuts every one to
              1,024 tokens and packing lays them out two per 2,048-token row.

Both folders must be listed in .git/info/exclude (/.whl/ and /.gpu_assets/) and named in the
device call's carry list.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]
# One version of each (the set this project's venv runs ray 2.60 / deepspeed 0.19.8 with).
WHEELS = ["ray==2.60.0", "pydantic==2.14.4", "pydantic_core==2.50.5", "annotated-types==0.8.0",
          "typing-inspection==0.4.5", "typing_extensions==4.16.0", "jsonschema==4.26.0",
          "jsonschema-specifications==2025.9.1", "referencing==0.37.0", "rpds-py==2026.9.1", "hjson==3.1.0",
          "tensorboardX==2.6.5", "aiohttp-cors==0.8.1", "colorful==0.5.8", "opencensus==0.11.4",
          "opencensus-context==0.1.3", "googleapis-common-protos==1.76.0", "protobuf==7.36.2",
          "opentelemetry-api==1.45.2", "opentelemetry-sdk==1.45.2", "opentelemetry-proto==1.45.2",
          "opentelemetry-exporter-prometheus==0.66b2", "opentelemetry-semantic-conventions==0.66b2",
          "importlib_metadata==9.1.0", "smart_open==9.0.2"]


def _drop(name: str) -> bool:
    return name.startswith("ray/jars/") or name.endswith(".js.map")


def repack_ray(wheel: Path) -> None:
    """Rewrite the ray wheel without ray/jars and *.js.map, RECORD updated to match."""
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for info in zin.infolist():
            if _drop(info.filename):
                continue
            data = zin.read(info.filename)
            if info.filename.endswith(".dist-info/RECORD"):
                data = "".join(line for line in data.decode().splitlines(keepends=True)
                               if not _drop(line.split(",", 1)[0])).encode()
            out = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            out.external_attr = info.external_attr  # keeps gcs_server, raylet … executable
            out.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(out, data, compresslevel=9)
    tmp.replace(wheel)


def wheels(target: Path) -> None:
    target.mkdir(exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                    "3.12", "--implementation", "cp", *platforms, "-d", str(target), *WHEELS], check=True)
    # deepspeed publishes an sdist only: build a pure-Python wheel (ops are JIT-built where needed).
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "deepspeed==0.19.8",
                    "-w", str(target)], check=True, env={**os.environ, "DS_BUILD_OPS": "0"})
    for wheel in target.glob("ray-*.whl"):
        repack_ray(wheel)


def assets(target: Path) -> None:
    from transformers import AutoTokenizer

    from raytune_llm.data.sft import render_conversation
    from raytune_llm.models.loading import resolve_model

    tokenizer_dir = target / "smollm2_tokenizer"
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    source = Path(resolve_model("builtin:smollm2"))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copy(source / name, tokenizer_dir / name)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    lima = json.loads((REPO.parent / "shared/data/instruct/lima.json").read_text())
    records, i = [], 0
    while i < len(lima):
        parts, chars, first = [], 0, lima[i]
        while i < len(lima) and chars < 5200:
            parts.append(lima[i]["output"])
            chars += len(lima[i]["output"])
            i += 1
        record = {"instruction": first["instruction"][:600], "input": "", "output": "\n\n".join(parts)}
        conversation = [{"role": "user", "content": record["instruction"]},
                        {"role": "assistant", "content": record["output"]}]
        if len(render_conversation(tokenizer, conversation, 100_000, None).input_ids) > 1100:
            records.append(record)
    with open(target / "long_instruct.jsonl", "w") as stream:
        stream.writelines(json.dumps(r) + "\n" for r in records)
    print(f"{len(records)} examples written to {target / 'long_instruct.jsonl'}")


if __name__ == "__main__":
    wheels(REPO / ".whl")
    assets(REPO / ".gpu_assets")
