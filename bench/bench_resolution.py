"""Faithfulness of each explanation statistic at several input sizes, with the time per run (issue 20).

    python bench/bench_resolution.py --trainer gpu --workers 8 --out bench-resolution    # one GPU
    python bench/bench_resolution.py --archs simple --sizes 32 --seeds 0 --explainers gradcam ixg \
        --override data.images_per_city=30 trainer.max_epochs=1                            # a dry run

Per size, one Hydra multirun of the demo (`citylens-train -m experiment=demo logger=csv`: its synthetic
cities, batch, per-architecture epochs and lr, early stopping) over --archs x --seeds at
`data.input_size=SIZE`, in <out>/size-<SIZE>/ (CITYLENS_OUTPUTS and CITYLENS_CACHE under <out>; the sweep
report is off). The first of --explainers is each run's own variant, the others its `extra_variants` (same
network, same causal table). `--trainer gpu` adds `trainer=gpu` and --workers loader workers and
counterfactual renderers; `--override key=value ...` goes to every sweep (replacing a key set here).
Rerunning with the same --out skips the runs already finished. `--read SIZE=SWEEP_DIR` reads a sweep that
already ran at that size instead of running one: the demo's at 64 px and `experiment=paper_synthetic`'s at
224 px are this script's sweeps with two of its explainers (gradcam, occlusion) and the sweep report on.
Sizes given only by --read are not run. A run's wall time is read from its folder (below), so a run whose
analysis was rerun afterwards (`citylens-analyze` rewrites complete.json) reads as that much longer.

Then, from every finished run's `analysis/<variant>/faithfulness.csv` (method counterfactual; rows without a
`statistic` column are the object ratio R, `ratio`), it prints per size x (explainer, statistic): mean
Spearman rho (over the cases where it is defined) and mean P@k against the causal effects, and the run-city
cases with P@k = 1 out of all; per size the mean wall time per run, overall and per architecture (a run's
time: from its `.hydra/` files, written when Hydra starts the job, to its complete.json; the first run of a
size also builds that size's data; a run finished by an earlier invocation has none), and every run's test
accuracy. The table, per architecture too (arch `all`: every run), goes to <out>/resolution.csv.
`make bench` leaves this script out: it trains whole sweeps (hours on a CPU).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from citylens.core.io import read_json
from citylens.pipeline.runs import Run, candidate_dirs, scan_sweep, sweep_variants

METHOD = "counterfactual"


def sweep_command(args: argparse.Namespace, size: int, sweep_dir: Path) -> list[str]:
    """`python -m citylens.app.train -m experiment=demo ...` for one size."""
    own, *extra = args.explainers
    cmd = [sys.executable, "-m", "citylens.app.train", "-m", "experiment=demo", "logger=csv"]
    cmd += [f"model={','.join(args.archs)}", f"seed={','.join(map(str, args.seeds))}"]
    cmd += [f"data.input_size={size}", f"data.images_per_city={args.images_per_city}", f"explainer={own}"]
    cmd += [f"extra_variants=[{','.join(extra)}]"]
    if args.trainer == "gpu":
        cmd += [
            "trainer=gpu",
            f"data.num_workers={args.workers}",
            f"analysis.steps.causal.workers={args.workers}",
        ]
    # An --override of a key set here replaces it (e.g. data.images_per_city=30 for a dry run).
    given = {o.split("=", 1)[0].lstrip("+~") for o in args.override}
    cmd = [c for c in cmd if "=" not in c or c.split("=", 1)[0] not in given]
    report_off = "hydra.callbacks.sweep_report.enabled=false"
    return [*cmd, *args.override, f"hydra.sweep.dir={sweep_dir}", report_off]


def run_sweep(args: argparse.Namespace, size: int) -> tuple[Path, float, int]:
    """One size's sweep as a subprocess, its output in <out>/size-<size>.log: (sweep dir, seconds, rc)."""
    sweep_dir = args.out / f"size-{size}"
    env = {
        **os.environ,
        "CITYLENS_OUTPUTS": str(args.out / "outputs"),
        "CITYLENS_CACHE": str(args.out / "cache"),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }
    log = args.out / f"size-{size}.log"
    cmd = sweep_command(args, size, sweep_dir)
    print(f"== {size} px: {' '.join(cmd[1:])}  (log: {log})", flush=True)
    start = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - start
    if rc != 0:
        print(f"sweep at {size} px failed (rc {rc}); the end of its log:", file=sys.stderr)
        print(log.read_text()[-3000:], file=sys.stderr)
    return sweep_dir, seconds, rc


def run_seconds(path: Path) -> float:
    """Wall time of a run: from its .hydra/ files (the job's start) to complete.json; NaN when unknown."""
    starts = [p.stat().st_mtime for p in (path / ".hydra").glob("*.yaml")]
    done = path / "complete.json"
    if not starts or not done.is_file() or done.stat().st_mtime < min(starts):
        return float("nan")
    return done.stat().st_mtime - min(starts)


def faithfulness_rows(run: Run, size: int) -> pd.DataFrame:
    """The counterfactual rows of a run's variant: size, arch, seed, explainer, statistic, city, rho, P@k.
    `explainer` is the variant name's first part: the explainer with the options that differ from its
    defaults (`occlusion_fill_surround`), so variants of one explainer stay apart."""
    table = run.table("faithfulness.csv")
    if table is None or table.empty:
        return pd.DataFrame()
    table = table[table["method"] == METHOD].copy()
    if "statistic" not in table.columns:
        table["statistic"] = "ratio"
    table["statistic"] = table["statistic"].fillna("ratio")
    ratio = table["statistic"] == "ratio"
    # R at the variant's own threshold (object_ratios.csv also holds the extra thresholds).
    table = table[~ratio | (table["threshold"] - run.threshold).abs().lt(1e-9)]
    return table.assign(
        size=size, arch=run.arch, seed=run.seed, run=run.name, explainer=run.variant.split("-")[0]
    )[["size", "arch", "seed", "run", "explainer", "statistic", "city", "spearman", "p_at_k"]]


def read_sweep(sweep_dir: Path, size: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(faithfulness rows of every variant of every finished run, per run: arch, seed, test acc, seconds)."""
    rows, unfinished = [], {}
    for variant in sweep_variants(sweep_dir):
        runs, missing = scan_sweep(sweep_dir, variant)
        unfinished.update(missing)
        rows += [faithfulness_rows(run, size) for run in runs]
    for name, why in unfinished.items():
        print(f"  {size} px: {name} left out ({why})")
    runs = []
    for path in candidate_dirs(sweep_dir):
        metrics = read_json(path / "metrics.json")
        if isinstance(metrics, dict) and "test/acc" in metrics:
            runs.append(
                {"size": size, "run": path.name, "arch": metrics.get("arch"), "seed": metrics.get("seed")}
                | {"test_acc": metrics["test/acc"], "seconds": run_seconds(path)}
            )
    faith = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    return faith, pd.DataFrame(runs)


def summarise(faith: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per size x arch (and `all`) x explainer x statistic: mean rho, mean P@k, cases with P@k = 1, time."""
    every = pd.concat([faith.assign(arch="all"), faith])
    table = (
        every.assign(exact=every["p_at_k"].ge(1 - 1e-9))
        .groupby(["size", "arch", "explainer", "statistic"], sort=False)
        .agg(
            mean_rho=("spearman", "mean"),
            rho_cases=("spearman", "count"),
            mean_p_at_k=("p_at_k", "mean"),
            p_at_k_1=("exact", "sum"),
            cases=("p_at_k", "size"),
            runs=("run", "nunique"),
        )
        .reset_index()
    )
    timed = pd.concat([runs.assign(arch="all"), runs])
    seconds = timed.groupby(["size", "arch"])["seconds"].mean().rename("s_per_run").reset_index()
    return table.merge(seconds, on=["size", "arch"], how="left")


def parse_read(parser: argparse.ArgumentParser, entries: list[str]) -> dict[int, Path]:
    """--read SIZE=DIR entries -> {size: sweep dir}; a malformed entry or a missing folder is an error."""
    read = {}
    for entry in entries:
        size, sep, folder = entry.partition("=")
        if not sep or not size.isdigit():
            parser.error(f"--read {entry!r}: expected SIZE=SWEEP_DIR, e.g. 64=outputs/sweeps/demo")
        if not Path(folder).is_dir():
            parser.error(f"--read {entry!r}: {folder} is not a folder")
        read[int(size)] = Path(folder).resolve()
    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "simple", "simpler", "vgg11"])
    parser.add_argument(
        "--sizes", nargs="*", type=int, default=None, help="default: 64 128 224 (none with --read)"
    )
    parser.add_argument(
        "--read", nargs="*", default=[], metavar="SIZE=DIR", help="read finished sweeps, no run"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument(
        "--explainers",
        nargs="+",
        default=["gradcam", "ixg", "occlusion", "ig"],
        help="explainer names: the first is each run's own variant, the others its extra_variants",
    )
    parser.add_argument("--images-per-city", type=int, default=700, help="the demo's 700")
    parser.add_argument("--trainer", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--workers", type=int, default=8, help="--trainer gpu: loader, render workers")
    parser.add_argument("--out", type=Path, default=Path("bench-resolution"), help="sweeps, caches, the CSV")
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides passed to every sweep")
    args = parser.parse_args()
    read = parse_read(parser, args.read)
    if args.sizes is None:
        args.sizes = [] if read else [64, 128, 224]
    if args.sizes and min(args.sizes) < 16:
        parser.error("--sizes: at least 16 px")
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)

    faith, runs, wall, failed = [], [], {}, []
    for size in sorted({*args.sizes, *read}):
        if size in read:
            sweep_dir, wall[size] = read[size], float("nan")
        else:
            sweep_dir, wall[size], rc = run_sweep(args, size)
            if rc != 0:
                failed.append(size)
        if sweep_dir.is_dir():
            rows, done = read_sweep(sweep_dir, size)
            faith.append(rows)
            runs.append(done)
    faith = pd.concat(faith, ignore_index=True) if faith else pd.DataFrame()
    runs = pd.concat(runs, ignore_index=True) if runs else pd.DataFrame()
    if faith.empty or runs.empty:
        sys.exit(f"no finished run with a faithfulness table under {args.out}")

    pd.set_option("display.width", 200)
    print("\ntest accuracy and wall time per run")
    print(runs.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    table = summarise(faith, runs)
    table.to_csv(args.out / "resolution.csv", index=False)
    pooled = table[table["arch"] == "all"].copy()
    pooled["P@k=1"] = pooled["p_at_k_1"].astype(str) + "/" + pooled["cases"].astype(str)
    print(f"\nfaithfulness against the {METHOD} effects (mean over run-city cases)")
    print(
        pooled[["size", "explainer", "statistic", "mean_rho", "mean_p_at_k", "P@k=1", "runs"]].to_string(
            index=False, float_format=lambda v: f"{v:.2f}"
        )
    )
    print("\nwall time per run (s)")
    for size in sorted(wall):
        per_arch = runs[runs["size"] == size].groupby("arch", sort=False)["seconds"].mean()
        n = int((runs["size"] == size).sum())
        archs = ", ".join(f"{arch} {s:.0f}" for arch, s in per_arch.items())
        mean = runs.loc[runs["size"] == size, "seconds"].mean()
        sweep = f"sweep {wall[size]:.0f} s" if size not in read else f"sweep read from {read[size]}"
        print(f"{size:4d} px: {mean:.0f} s/run ({archs}); {sweep} / {n} runs")
    print(f"\ntable -> {args.out / 'resolution.csv'}")
    ran = set(args.sizes) - set(read)  # a sweep read, not run, holds the variants it was run with
    missing = sorted(set(args.explainers) - set(faith["explainer"])) if ran else []
    problems = []
    if failed:
        problems.append(f"sweeps failed at {failed} px")
    if missing:
        problems.append(f"no faithfulness rows for {missing}")
    if problems:
        sys.exit(f"{'; '.join(problems)} (logs under {args.out})")


if __name__ == "__main__":
    main()
