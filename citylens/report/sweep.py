"""The sweep report: every finished run of a sweep compared on one page -> <sweep>/report/.

`build_report(sweep_dir)` reads the finished runs (metrics.json + mask store; object_ratios.csv, tsne.csv and
recovery.csv where present), lists the unfinished ones, splits the runs into data groups (runs of the same
data; never compared across), and writes per group Table 2 (AR per pair of runs with 95% intervals over
test places, grouped as in the paper) with its heatmap, the tests over run relabellings and Figure 6; then
Figures 3 and 5 across runs, the planted-object recovery, the faithfulness of the explanations and the
randomisation sanity check (citylens.report.faithfulness), report.md with one line of reading per table and
figure, and explorer.html, the interactive page over every test image (report/explorer.py, docs/explorer.md).
The report is built in a temporary folder and renamed into place, so a report that exists is whole.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from citylens.core.errors import ConfigError
from citylens.core.faults import kill_point
from citylens.core.io import atomic_write_text, file_lock, write_csv
from citylens.core.run_folder import RunStatus
from citylens.pipeline.runs import (
    REPORT_DIR,
    Run,
    data_groups,
    is_sweep_dir,
    order_by_arch,
    scan_sweep,
    stream_residuals,
    sweep_variants,
)
from citylens.report.concepts import concept_agreement, concept_section, concept_summary
from citylens.report.examples import Views
from citylens.report.explorer import build_explorer
from citylens.report.faithfulness import faithfulness_sections
from citylens.report.headline import Choice, headline_choice, headline_section, importance_agreement
from citylens.report.sections import (
    Section,
    explainers_section,
    fig3_section,
    fig5_section,
    fig6_section,
    groups_section,
    misclassified_section,
    recovery_section,
    runs_section,
    stats_section,
    table2_sections,
    variants_section,
)
from citylens.report.tables import (
    comparison_tests,
    misclassified_table,
    ratio_distances,
    ratio_spread,
    recovery_table,
    table2,
    variant_table,
)

log = logging.getLogger("citylens.report")


@dataclass
class Options:
    """Report settings: bootstrap replicates, permutations, sample images per city, chunk size, seed, and
    whether to write the interactive explorer (explorer.html)."""

    n_boot: int = 1000
    n_perm: int = 10000
    examples_per_city: int = 2
    chunk: int = 128
    seed: int = 0
    explorer: bool = True


def _variant_runs(sweep_dir: Path, variants: list[str]) -> dict[str, list[list[Run]]]:
    """The finished runs of every variant, split into data groups, architectures grouped."""
    found = {}
    for variant in variants:
        finished, _ = scan_sweep(sweep_dir, variant)
        groups, _ = data_groups(finished)
        if groups:
            found[variant] = [order_by_arch(g) for g in groups]
    return found


GROUP_TABLES = (
    "table2.csv", "table2_grouped.csv", "ratio_distances.csv", "statistics.csv", "concept_agreement.csv"
)  # fmt: skip


def _group_sections(
    runs: list[Run],
    group: int | None,
    options: Options,
    threshold: float,
    out: Path,
    views: Views | None,
    choice: Choice | None,
) -> tuple[list[Section], Section, dict[str, pd.DataFrame]]:
    """Table 2, its heatmap, the tests and Figure 6 of one data group (runs of the same data)."""
    pairs = (
        stream_residuals([r.store for r in runs], [r.name for r in runs], options.chunk)
        if len(runs) > 1
        else None
    )
    per_pair, grouped = table2(runs, pairs, options.n_boot, options.seed)
    distances = ratio_distances(runs, threshold)
    agreement = importance_agreement(runs, choice.variant, choice.statistic) if choice else None
    concepts = concept_agreement(runs)
    tests = comparison_tests(runs, per_pair, distances, options.n_perm, options.seed, agreement, concepts)
    sections = table2_sections(runs, per_pair, grouped, tests, out, group)
    sections.append(stats_section(tests, len(runs), group))
    fig6 = fig6_section(
        runs, pairs.matrix() if pairs else None, options.examples_per_city, options.seed, out, group, views
    )
    if options.explorer:
        name = "explorer" if group is None else f"explorer_group{group}"
        reader = views(runs[0]) if views is not None else None
        build_explorer(runs, out, pairs, per_pair, threshold, reader, name=name)
    tables = dict(zip(GROUP_TABLES, (per_pair, grouped, distances, tests, concepts)))
    return sections, fig6, {k: t.assign(data_group=group or 1) for k, t in tables.items()}


def _sections(
    groups: list[list[Run]], ignored: dict[str, str], options: Options, out: Path, views: Views | None
) -> list[Section]:
    runs = [r for g in groups for r in g]
    sections = [runs_section(runs, ignored)]
    if not runs:
        return sections
    choice = headline_choice(runs)
    if choice is not None:
        sections.insert(0, headline_section(runs, choice, out))
    misclassified = misclassified_table(runs)
    write_csv(misclassified, out / "misclassified.csv")
    sections.append(misclassified_section(misclassified))
    if len(groups) > 1:
        sections.append(groups_section(groups))
    threshold = runs[0].threshold
    fig6s, tables = [], {name: [] for name in GROUP_TABLES}
    log.info("sweep report: residuals, Table 2 and statistics of %d runs...", len(runs))
    for k, group in enumerate(groups, 1):
        parts, fig6, group_tables = _group_sections(
            group, k if len(groups) > 1 else None, options, threshold, out, views, choice
        )
        sections += parts
        fig6s.append(fig6)
        for name, table in group_tables.items():
            tables[name].append(table)
    for name, parts in tables.items():
        write_csv(pd.concat(parts, ignore_index=True), out / name)
    log.info("sweep report: figures 3, 5, 6 across %d runs...", len(runs))
    sections.append(fig3_section(runs, out))
    spread = ratio_spread(groups, threshold)
    write_csv(spread, out / "ratio_spread.csv")
    sections.append(fig5_section(runs, threshold, out, spread))
    sections += fig6s
    recovery = recovery_table(runs, threshold)
    if len(recovery):
        write_csv(recovery, out / "recovery.csv")
        sections.append(recovery_section(recovery))
    sections += faithfulness_sections(runs, out)
    summary = concept_summary(runs)
    if len(summary):
        write_csv(summary, out / "concepts.csv")
        agreement = pd.concat([concept_agreement(g) for g in groups], ignore_index=True)
        sections.append(concept_section(runs, summary, agreement))
    return sections


def build_report(sweep_dir: Path | str, options: Options | None = None, views: Views | None = None) -> Path:
    """Write <sweep>/report/ (tables, figures, report.md) from the sweep's finished runs; return its path.

    `views` gives a run's view reader for Figure 6 and the explorer (the adapters pass
    citylens.app.run_views.view_reader); None draws the masks alone."""
    sweep_dir = Path(sweep_dir).resolve()
    if not is_sweep_dir(sweep_dir):
        raise ConfigError(f"{sweep_dir}: not a sweep folder (no multirun.yaml); give outputs/sweeps/<stamp>")
    options = options or Options()
    with file_lock(sweep_dir / ".report.lock"):
        variants = sweep_variants(sweep_dir)
        finished, ignored = scan_sweep(sweep_dir, variants[0] if variants else None)
        groups, refused = data_groups(finished)
        ignored.update(
            {name: RunStatus("ignored", f"not comparable: {why}") for name, why in refused.items()}
        )
        groups = [order_by_arch(g) for g in groups]
        runs = [r for g in groups for r in g]
        for stale in [*sweep_dir.glob(f".{REPORT_DIR}.tmp*"), *sweep_dir.glob(f".{REPORT_DIR}.old*")]:
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed report (this process holds the lock)
        tmp = sweep_dir / f".{REPORT_DIR}.tmp{os.getpid()}"
        tmp.mkdir()
        try:
            sections = _sections(groups, ignored, options, tmp, views)
            if variants:
                found = _variant_runs(sweep_dir, variants)
                variant_rows = variant_table(found, options.chunk)
                write_csv(variant_rows, tmp / "variants.csv")
                sections.append(variants_section(variant_rows, variants[0]))
                grid = explainers_section(
                    {v: groups[0] for v, groups in found.items()},
                    views,
                    options.examples_per_city,
                    options.seed,
                    tmp,
                )
                if grid is not None:
                    sections.append(grid)
            kill_point("report")
            write_csv(
                pd.DataFrame(
                    {
                        "run": [r.name for r in runs] + list(ignored),
                        "data_group": [k for k, g in enumerate(groups, 1) for _ in g] + [None] * len(ignored),
                        "status": ["finished"] * len(runs) + [s.state for s in ignored.values()],
                        "reason": [""] * len(runs) + [str(s) for s in ignored.values()],
                    }
                ),
                tmp / "runs.csv",
            )
            head = f"# Sweep report: {sweep_dir.name}\n\n`{sweep_dir}`"
            for page in sorted(p.name for p in tmp.glob("explorer*.html")):
                head += f"\n\nBrowse every test image of every run: [{page}]({page})"
            atomic_write_text(tmp / "report.md", "\n\n".join([head, *(s.render() for s in sections)]) + "\n")
            out = _replace(tmp, sweep_dir / REPORT_DIR)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("sweep report: %d runs, %d ignored -> %s", len(runs), len(ignored), out / "report.md")
    return out


def _replace(tmp: Path, out: Path) -> Path:
    """Move the finished report into place over an older one."""
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out
