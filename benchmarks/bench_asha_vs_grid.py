"""Benchmark: ASHA against a full grid over the same search space, on real data.

Runs `raytune-llm tune` (the app's own `run_tune`: the same sweep, selection by validation
macro-F1, and one test-split scoring of the chosen trial) twice on one config: first with
`tune.scheduler=fifo` (every configuration trained to `train.epochs`), then with
`tune.scheduler=asha`. Compute is counted in trial-epochs: the sum over trials of the last
epoch each reported (fractional when evaluations run inside epochs).

    python benchmarks/bench_asha_vs_grid.py [--config benchmarks/asha_vs_grid.yaml] [override ...]

Issue target: ASHA's chosen trial within 1 point of the grid's test macro-F1 while spending
at most 1/3 of the grid's trial-epochs. Results: benchmarks/results/asha_vs_grid.json (and .md);
figures: benchmarks/README.md. Run directories go under the config's output.dir (/tmp).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SWEEPS = ("fifo", "asha")  # the grid first, then ASHA on the very same space


def run_one(config: str, scheduler: str, overrides: list[str]) -> dict[str, Any]:
    """One sweep through the app; returns what the comparison needs, per trial and in total."""
    import ray

    from raytune_llm import app

    started = time.perf_counter()
    out = app.run_tune(config, [*overrides, f"tune.scheduler={scheduler}", f"output.name=asha_vs_grid_{scheduler}"])
    wall = time.perf_counter() - started
    ray.shutdown()  # the next sweep starts its own Ray, as a second command would
    trials = [{"trial": r.trial_id, "params": r.params, "status": r.status, "epochs_run": r.epochs_run,
               "best_val_f1": r.best_metric, "best_epoch": r.best_epoch, "wall_seconds": round(r.wall_seconds, 1)}
              for r in out["records"]]
    best = out["best"]
    return {"scheduler": scheduler, "wall_seconds": round(wall, 1), "run_dir": str(out["run_dir"]),
            "trial_epochs": round(sum(float(r.epochs_run) for r in out["records"]), 4),
            "chosen": {"trial": best.trial_id, "params": best.params, "best_val_f1": best.best_metric,
                       "best_epoch": best.best_epoch},
            "test_f1": out["test"]["test_f1"], "test_accuracy": out["test"]["test_accuracy"],
            "test_rows": int(out["test"]["test_support"]), "trials": trials}


def markdown(result: dict[str, Any]) -> str:
    """The comparison table as it goes into benchmarks/README.md."""
    grid, asha = result["sweeps"]["fifo"], result["sweeps"]["asha"]
    lines = ["| sweep | trials | trial-epochs | chosen (lr, micro-batch) | chosen val macro-F1 | test macro-F1 | "
             "test accuracy | wall s |", "|---|---|---|---|---|---|---|---|"]
    for name, sweep in (("full grid (FIFO)", grid), ("ASHA", asha)):
        params = sweep["chosen"]["params"]
        lines.append(f"| {name} | {len(sweep['trials'])} | {sweep['trial_epochs']:.2f} | "
                     f"{params.get('train.learning_rate'):g}, {params.get('train.batch_size')} | "
                     f"{sweep['chosen']['best_val_f1']:.4f} | {sweep['test_f1']:.4f} | {sweep['test_accuracy']:.4f} | "
                     f"{sweep['wall_seconds']:.0f} |")
    lines += ["", f"ASHA / grid trial-epochs: **{result['trial_epoch_ratio']:.3f}** (target ≤ 0.333); "
              f"test macro-F1 gap (grid − ASHA): **{result['test_f1_gap_points']:+.2f} points** (target ≤ 1.00); "
              f"wall time ratio {result['wall_ratio']:.3f}.", "",
              "| trial | lr | micro-batch | grid: epochs run, best val F1 | ASHA: epochs run, best val F1, status |",
              "|---|---|---|---|---|"]
    asha_by = {(t["params"].get("train.learning_rate"), t["params"].get("train.batch_size")): t for t in asha["trials"]}
    for t in sorted(grid["trials"], key=lambda t: (t["params"].get("train.learning_rate"), t["params"].get("train.batch_size"))):
        key = (t["params"].get("train.learning_rate"), t["params"].get("train.batch_size"))
        a = asha_by.get(key, {})
        lines.append(f"| {t['trial']} | {key[0]:g} | {key[1]} | {t['epochs_run']}, {t['best_val_f1']:.4f} | "
                     f"{a.get('epochs_run')}, {a.get('best_val_f1') or float('nan'):.4f}, {a.get('status')} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "benchmarks" / "asha_vs_grid.yaml"))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "asha_vs_grid"),
                        help="results path without extension (.json and .md are written)")
    parser.add_argument("--grid-from", default=None,
                        help="reuse the full-grid (fifo) sweep of an earlier results .json of this config "
                             "instead of running it again (the grid is seeded: a rerun trains identically); "
                             "the results say so")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides for both sweeps")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    overrides = list(args.overrides)
    if not any(o.startswith("data.path=") for o in overrides):
        # The config's relative data path is relative to the repository root, wherever this runs from.
        overrides.insert(0, f"data.path={REPO.parent / 'shared' / 'data' / 'financial_phrasebank' / 'Sentences_AllAgree.txt'}")
    reused = json.loads(Path(args.grid_from).read_text()) if args.grid_from else None
    sweeps = {scheduler: reused["sweeps"]["fifo"] if reused and scheduler == "fifo"
              else run_one(args.config, scheduler, overrides) for scheduler in SWEEPS}
    grid, asha = sweeps["fifo"], sweeps["asha"]
    result = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "config": str(Path(args.config).resolve().relative_to(REPO))
              if Path(args.config).resolve().is_relative_to(REPO) else args.config, "overrides": args.overrides,
              "trial_epoch_ratio": round(asha["trial_epochs"] / grid["trial_epochs"], 4),
              "test_f1_gap_points": round(100 * (grid["test_f1"] - asha["test_f1"]), 2),
              "wall_ratio": round(asha["wall_seconds"] / grid["wall_seconds"], 4), "sweeps": sweeps,
              "grid_reused_from": reused["created"] if reused else None}
    result["targets_met"] = {"trial_epochs_at_most_one_third": result["trial_epoch_ratio"] <= 1 / 3,
                             "test_f1_within_one_point": result["test_f1_gap_points"] <= 1.0}
    target = Path(args.results)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.with_suffix(".json").write_text(json.dumps(result, indent=2))
    target.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(json.dumps({k: v for k, v in result.items() if k != "sweeps"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
