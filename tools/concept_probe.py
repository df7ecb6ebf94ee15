"""Probe the concept analysis on finished runs: concepts against the counterfactual effects, and agreement.

    python tools/concept_probe.py RUN_DIR [RUN_DIR ...] [--layer earlier] [--k 12] [--seed 0]
                                  [--importance removal|sobol] [--n-designs 16] [--min-lift 1.5]
                                  [--out DIR] [--override KEY=VALUE ...]

For each finished run (a folder with .hydra/overrides.yaml, checkpoints and causal.csv, docs/concepts.md):
the concept bank is fitted by NMF on the validation images' activations at `--layer` (`earlier`: one stage
before the last conv, EARLIER_LAYERS; or a preset such as last_conv, or a dotted path), the test images'
concept maps are taken with the bank fixed, each concept is scored per city by removal (drop of
log P(true city); or `--importance sobol`, CRAFT's total Sobol index) and named by lift among the objects
of causal.csv (the objects the counterfactual renderer can remove), using the ground-truth label maps of the
synthetic cities. Printed per run and city: the two
most important concepts with their names, the two objects of largest counterfactual effect, and whether
the top concept (and either of the top two) is named after one of them; then the counts over all run-city
cases, and, for two or more runs, the Hungarian agreement of every pair of runs' concepts (per-image
strengths over the shared test images), seed pairs against architecture pairs.
`--out DIR` also writes DIR/<run>.concepts.csv (city, concept, importance with its interval, object, lift).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate

from citylens.analysis.concepts import (
    concept_importance,
    concept_maps,
    concept_names,
    concept_objects,
    concept_sobol,
    concept_strength,
    fit_concepts,
    importance_table,
    layer_activations,
    match_concepts,
)
from citylens.app.config import run_config
from citylens.core.ade20k import class_index
from citylens.core.io import atomic_path
from citylens.core.run_folder import best_checkpoint
from citylens.data.synthetic import OPTIONAL
from citylens.models import CityClassifier
from citylens.pipeline.concepts_step import concept_layer
from citylens.segment import GroundTruthSegmenter


@dataclass
class Probed:
    """One run's concepts: its table (per city and concept, named), per-image strengths and test image ids."""

    name: str
    arch: str
    table: pd.DataFrame
    strength: np.ndarray
    image_ids: list[str]
    causal_top2: dict[str, list[str]]


def _views(datamodule: object, split: str) -> tuple[torch.Tensor, list]:
    views, records = [], []
    for _, batch, chunk in datamodule.split_view(split).batches(256):
        views.append(batch)
        records += chunk
    return torch.cat(views), records


def probe_run(run_dir: Path, args: argparse.Namespace) -> Probed:
    """The concept analysis of one finished run (see the module docstring)."""
    cfg = run_config(run_dir, list(args.override))
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    module = CityClassifier.load_from_checkpoint(best_checkpoint(run_dir), map_location="cpu")
    network, arch = module.network.eval(), module.hparams.arch
    layer = concept_layer(args.layer, network)
    val, _ = _views(datamodule, "val")
    test, records = _views(datamodule, "test")
    targets = datamodule.targets("test")
    bank = fit_concepts(layer_activations(network, layer, val), args.k, seed=args.seed)
    maps = concept_maps(layer_activations(network, layer, test), bank)
    if args.importance == "sobol":
        importance = concept_sobol(network, layer, test, targets, bank, maps, args.n_designs)
    else:
        importance = concept_importance(network, layer, test, targets, bank, maps)
    table = importance_table(importance, targets, datamodule.cities, places=[r.place for r in records])

    causal = pd.read_csv(run_dir / "causal.csv")
    causal = causal[causal["method"] == "counterfactual"] if "method" in causal else causal
    removable = sorted(set(causal["object"])) or list(OPTIONAL)
    labels = np.stack([GroundTruthSegmenter(datamodule.input_size).load(r) for r in records])
    objects = concept_objects(maps, labels, [class_index(o) for o in removable])  # upsampled inside
    names = concept_names(objects, args.min_lift)
    table = table.merge(names, on="concept", how="left")
    top2 = {
        city: group.sort_values("effect", ascending=False)["object"].head(2).tolist()
        for city, group in causal.groupby("city")
    }
    return Probed(run_dir.name, arch, table, concept_strength(maps), [r.image_id for r in records], top2)


def report(probed: list[Probed]) -> None:
    """Print each run-city case, the counts, and the agreement of concepts between runs."""
    first = second = cases = 0
    for run in probed:
        for city, group in run.table.groupby("city", sort=True):
            top = group.head(2)
            named = [o if isinstance(o, str) else "(no object)" for o in top["object"]]
            truth = run.causal_top2.get(city, [])
            hit1 = named[0] in truth
            hit2 = any(o in truth for o in named)
            first, second, cases = first + hit1, second + hit2, cases + 1
            shown = ", ".join(
                f"#{c} {o} (lift {lift:.1f}, {imp:+.3f} [{lo:+.3f}, {hi:+.3f}])"
                for c, o, lift, imp, lo, hi in zip(
                    top["concept"], named, top["lift"], top["importance"], top["importance_low"],
                    top["importance_high"],
                )
            )  # fmt: skip
            verdict = f"top on top 2: {'yes' if hit1 else 'no'}, one of two: {'yes' if hit2 else 'no'}"
            print(f"{run.name} {city}: top concepts {shown}; causal top 2: {truth}; {verdict}")
    print(f"most important concept on a causal top-2 object: {first} of {cases}")
    print(f"one of the two most important concepts on a causal top-2 object: {second} of {cases}")
    if len(probed) < 2:
        return
    groups: dict[str, list[float]] = {"seed pairs": [], "architecture pairs": []}
    for a, b in itertools.combinations(probed, 2):
        shared = sorted(set(a.image_ids) & set(b.image_ids))
        if len(shared) < 2:
            print(f"{a.name} vs {b.name}: fewer than 2 shared test images, not compared")
            continue
        ia, ib = ({i: n for n, i in enumerate(r.image_ids)} for r in (a, b))
        match = match_concepts(a.strength[[ia[i] for i in shared]], b.strength[[ib[i] for i in shared]])
        kind = "seed pairs" if a.arch == b.arch else "architecture pairs"
        groups[kind].append(match.agreement)
        print(f"concept agreement {a.name} vs {b.name} ({kind[:-1]}): {match.agreement:.3f}")
    for kind, values in groups.items():
        if values:
            print(f"mean concept agreement, {kind}: {np.mean(values):.3f} over {len(values)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders")
    parser.add_argument("--layer", default="earlier", help="'earlier' (EARLIER_LAYERS), a preset or a path")
    parser.add_argument("--k", type=int, default=12, help="concepts per run")
    parser.add_argument("--seed", type=int, default=0, help="NMF seed")
    parser.add_argument(
        "--importance",
        choices=["removal", "sobol"],
        default="removal",
        help="removal: drop of log P(true city) without the concept; sobol: CRAFT's total Sobol index",
    )
    parser.add_argument("--n-designs", type=int, default=16, help="random masks per Sobol design")
    parser.add_argument("--min-lift", type=float, default=1.5, help="below it a concept matches no object")
    parser.add_argument("--out", type=Path, default=None, help="write <run>.concepts.csv files here")
    parser.add_argument("--override", nargs="*", default=[], help="extra config overrides for every run")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    probed = []
    for run_dir in args.runs:
        if not (run_dir / "causal.csv").is_file():
            sys.exit(f"{run_dir}: no causal.csv (not a finished run with the causal analysis)")
        probed.append(probe_run(run_dir, args))
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            with atomic_path(args.out / f"{run_dir.name}.concepts.csv") as tmp:
                probed[-1].table.to_csv(tmp, index=False)
    report(probed)


if __name__ == "__main__":
    main()
