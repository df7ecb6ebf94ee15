"""Every explainer x layer on a finished sweep's checkpoints: planted-object recovery, faithfulness, time.

For each run of the sweep and each (method, layer) it calls `citylens-analyze RUN explainer=M
explainer.layer=L` (in this process, so imports are paid once), reusing the run's causal.csv (the causal step
is per network, not per explainer), and prints one row per (method, layer): mean planted-object P@k over runs
and cities (what the data holds), mean Spearman rho and P@k of R against the counterfactual effects (what the
networks use), the sanity check's rho after full randomisation, and the mean analysis time per run.

    python bench/sweep_variants.py outputs/sweeps/<demo sweep> [--methods ...] [--layers ...]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd

from citylens.app.analyze import analyze
from citylens.core.layers import LAYER_PRESETS
from citylens.explain.methods import CAMS
from citylens.pipeline import Variant
from citylens.pipeline.runs import scan_sweep


def measure(run_dir: Path, arch: str, method: str, layer: str, n_images: int) -> dict:
    """Analyse one run with one explainer and layer; read back its recovery, faithfulness and sanity
    (n_images = 0: no sanity check)."""
    overrides = [
        f"explainer={method}",
        f"explainer.layer={layer}",
        "analysis.steps.causal=null",
        "analysis.steps.explain.thumbnails=100",
        f"analysis.steps.faithfulness.n_images={max(n_images, 1)}",
        f"analysis.steps.faithfulness.sanity={str(n_images > 0).lower()}",
    ]
    start = time.perf_counter()
    analyze(run_dir, overrides)
    seconds = time.perf_counter() - start
    out = Variant(explainer=method, layer=layer).dir(run_dir)
    recovery = pd.read_csv(out / "recovery.csv")
    recovery = recovery[recovery["threshold"] == 0.5]
    faith = pd.read_csv(out / "faithfulness.csv") if (out / "faithfulness.csv").is_file() else None
    faith = faith[faith["method"] == "counterfactual"] if faith is not None else None
    if faith is not None and "statistic" in faith.columns:  # the concept rows score no explainer
        faith = faith[faith["statistic"] != "concept"]
    sanity = pd.read_csv(out / "sanity.csv") if n_images > 0 else None
    return {
        "arch": arch,
        "method": method,
        "layer": layer,
        "run": run_dir.name,
        "planted_p_at_k": recovery["precision_at_k"].mean(),
        "causal_rho": faith["spearman"].mean() if faith is not None else float("nan"),
        "causal_p_at_k": faith["p_at_k"].mean() if faith is not None else float("nan"),
        "sanity_full_rho": (
            float(sanity[sanity["step_name"] == "full"]["mean_spearman"].iloc[0])
            if sanity is not None
            else float("nan")
        ),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--methods", nargs="+", default=list(CAMS))
    parser.add_argument("--layers", nargs="+", default=["last_block", "last_conv", "layer3", "layer2"])
    parser.add_argument("--sanity-images", type=int, default=32, help="0: skip the sanity check")
    parser.add_argument("--runs", nargs="*", default=None, help="only these run folder names")
    parser.add_argument("--out", type=Path, default=None, help="CSV of every (run, method, layer) row")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    runs, _ = scan_sweep(args.sweep)
    runs = [r for r in runs if args.runs is None or r.name in args.runs]
    rows = []
    for run in runs:
        presets = LAYER_PRESETS[run.arch]
        # A preset naming the same module as another (ResNet18's last_conv is its last_block) is run once.
        layers, seen = [], set()
        for layer in args.layers:
            if layer in presets and presets[layer] not in seen:
                seen.add(presets[layer])
                layers.append(layer)
        for method in args.methods:
            for layer in layers:
                rows.append(measure(run.path, run.arch, method, layer, args.sanity_images))
                print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    summary = table.groupby(["method", "layer", "arch"], sort=False).mean(numeric_only=True).reset_index()
    print("\nper architecture (mean over seeds):")
    print(summary.to_string(index=False, float_format="%.2f"))
    overall = table.groupby(["method", "layer"], sort=False).mean(numeric_only=True).reset_index()
    print("\nover all runs (layers an architecture lacks are left out):")
    print(overall.to_string(index=False, float_format="%.2f"))


if __name__ == "__main__":
    main()
