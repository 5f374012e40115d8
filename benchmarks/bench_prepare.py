"""Benchmark: `prepare` against Hugging Face `datasets` on >= 50k annotated rows (one run).

The rows are built at run time from Financial PhraseBank 75Agree (../shared/data, not shipped;
latin-1, so no U+FFFD rows for our reader to quarantine and both sides see the same rows):
each row joins two of its sentences, seeded, and keeps the first one's label, which
gives realistic finance text at any size. The corpus goes to a temporary folder.

    python benchmarks/bench_prepare.py [--rows 52000] [--workers 1,2]

Figures: benchmarks/README.md. Results are appended to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHRASEBANK = REPO.parent / "shared" / "data" / "financial_phrasebank" / "Sentences_75Agree.txt"


def write_corpus(path: Path, rows: int, seed: int = 0) -> int:
    """`rows` JSON lines of two joined PhraseBank sentences each; returns the count written."""
    sentences = []
    for line in PHRASEBANK.read_text(encoding="latin-1").splitlines():
        text, _, label = line.rpartition("@")
        if text.strip() and label.strip():
            sentences.append((text.strip(), label.strip()))
    rng = random.Random(seed)
    with path.open("w") as stream:
        for _ in range(rows):
            (first, label), (second, _) = rng.choice(sentences), rng.choice(sentences)
            stream.write(json.dumps({"text": f"{first} {second}", "label": label}) + "\n")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=52_000)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    if not PHRASEBANK.exists():
        print(f"needs {PHRASEBANK} (../shared/data beside the repository)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    from raytune_llm.bench.data import run_bench_data

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "phrasebank_pairs.jsonl"
        write_corpus(corpus, args.rows)
        config = Path(tmp) / "bench.yaml"
        config.write_text(f"""
data: {{path: {corpus}, max_length: 128, split: {{train: 0.8, validation: 0.1, test: 0.1}}}}
model: {{name_or_path: "builtin:minilm"}}
train: {{num_workers: 1}}
output: {{dir: {tmp}/runs, name: bench_prepare}}
""")
        run_bench_data(str(config), [], None, workers=[int(w) for w in args.workers.split(",")],
                       out_dir=str(REPO / "benchmarks" / "results"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
