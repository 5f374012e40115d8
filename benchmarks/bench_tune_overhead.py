"""Benchmark: Ray Tune's own overhead in a raytune_llm sweep, with no training in the trials.

Each trial only sleeps `--seconds` per "epoch" and reports, so the sweep's ideal wall time
is known exactly: ceil(trials / concurrency) × epochs × seconds. The sweep uses the same
searcher, scheduler settings and progress callback as `raytune-llm tune` (FIFO so that no
trial stops early and the ideal stays exact). Ray's start-up is not timed.

    python benchmarks/bench_tune_overhead.py [--trials 32] [--epochs 3] [--seconds 1.0] [--concurrency 4]

Target (issue: sweeps): measured / ideal <= 1.25. Figures: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _noop_trial(config: dict) -> None:
    import ray.tune

    for epoch in range(config["epochs"]):
        time.sleep(config["seconds"])
        ray.tune.report({"val_f1": 0.5 + 0.001 * epoch, "epoch": epoch + 1})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import ray
    import ray.tune

    from raytune_llm.config.schema import RunConfig
    from raytune_llm.tune.progress import TrialProgress
    from raytune_llm.tune.sweep import _search_alg

    cfg = RunConfig.model_validate({"data": {"path": "unused"}, "model": {"name_or_path": "unused"},
                                    "tune": {"scheduler": "fifo", "num_samples": args.trials}})
    ray.init(num_cpus=args.concurrency, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        tuner = ray.tune.Tuner(
            ray.tune.with_resources(_noop_trial, {"CPU": 1}),
            param_space={"epochs": args.epochs, "seconds": args.seconds,
                         "train.learning_rate": ray.tune.loguniform(1e-5, 1e-3)},
            tune_config=ray.tune.TuneConfig(metric="val_f1", mode="max", num_samples=args.trials,
                                            search_alg=_search_alg(cfg, args.concurrency)),
            run_config=ray.tune.RunConfig(name="overhead", storage_path=tmp, verbose=0,
                                          callbacks=[TrialProgress("val_f1", ["train.learning_rate"])]),
        )
        started = time.perf_counter()
        grid = tuner.fit()
        wall = time.perf_counter() - started
    ray.shutdown()
    ideal = math.ceil(args.trials / args.concurrency) * args.epochs * args.seconds
    result = {"trials": args.trials, "epochs": args.epochs, "seconds_per_epoch": args.seconds,
              "concurrency": args.concurrency, "errors": sum(r.error is not None for r in grid),
              "wall_seconds": round(wall, 2), "ideal_seconds": ideal, "ratio": round(wall / ideal, 3)}
    print(json.dumps(result))
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    with (out / "tune_overhead.jsonl").open("a") as stream:
        stream.write(json.dumps({**result, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
