"""Write a finished sweep's key results into docs/results.md, between its two markers.

    python tools/results_doc.py SWEEP_DIR [--doc docs/results.md] [--block results]

Reads the sweep report that `citylens-report SWEEP_DIR` (or the end of a `-m` sweep) wrote under
SWEEP_DIR/report/ and replaces the text between `<!-- results:begin -->` and `<!-- results:end -->` of the
document with (`--block paper_synthetic` uses the markers `<!-- paper_synthetic:begin -->` and
`<!-- paper_synthetic:end -->` instead: one document holds the demo's and the 224 px preset's results):

- "What makes each city recognisable" (report.md's headline: which explanation statistic agrees best with
  the causal effects, and each city's objects ranked by it), when the sweep has one;
- "Runs" (report.md: every finished run with its test accuracy);
- Table 2 (table2_grouped.csv: AR per group of pairs, 95% interval over test places, SD across seeds, the
  paper's value) with report.md's reading of it;
- the tests of "architectures differ more than seeds" (statistics.csv: AR, the object-ratio profiles and
  the agreement of the object-importance rankings) with report.md's reading of them;
- "Concepts the networks found" (report.md: each run's most important concept per city, its name and causal
  rank, the agreement of matched concepts), when the sweep has it.

The block is stamped with the sweep folder's name, not a date; the text outside the markers is left as it
is. Links and figures of report.md point into the report folder, so they become plain text here. A missing
report file or marker stops the tool with one line naming it (exit status 2).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from pathlib import Path

BLOCK = "results"


def markers(block: str = BLOCK) -> tuple[str, str]:
    """The begin and end marker lines of a named block."""
    return f"<!-- {block}:begin -->", f"<!-- {block}:end -->"


BEGIN, END = markers()
DOC = Path(__file__).resolve().parents[1] / "docs" / "results.md"
REPORT_DIR = "report"
REPORT_MD, TABLE2, STATISTICS = "report.md", "table2_grouped.csv", "statistics.csv"
HEADLINE, RUNS, CONCEPTS = "What makes each city recognisable", "Runs", "Concepts the networks found"
TABLE2_TITLE, STATISTICS_TITLE = "Table 2: average residual", "Statistics: "


class ResultsDocError(Exception):
    """A file or marker the tool needs is missing; the message names it."""


REPORT_HINT = "a finished sweep's report? (citylens-report SWEEP_DIR writes it)"


def read_text(path: Path, hint: str = REPORT_HINT) -> str:
    if not path.is_file():
        raise ResultsDocError(f"{path}: missing ({hint})")
    return path.read_text()


def read_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(read_text(path).splitlines()))


def sections(markdown: str) -> dict[str, str]:
    """report.md's `## ` sections by title, each without its heading."""
    found = {}
    for part in re.split(r"^## ", markdown, flags=re.M)[1:]:
        title, _, body = part.partition("\n")
        found[title.strip()] = body.strip()
    return found


def plain(body: str) -> str:
    """A report section without its figures, and its relative links as plain text (they point into the
    report folder, not next to the document)."""
    lines = [line for line in body.splitlines() if not line.lstrip().startswith("![")]
    text = "\n".join(lines).strip()
    return re.sub(r"\[([^\]]*)\]\((?!https?://)[^)]*\)", r"\1", text)


def number(value: str, digits: int) -> str:
    try:
        x = float(value)
    except ValueError:
        return value or "–"
    return f"{x:.{digits}f}" if math.isfinite(x) else "–"


def p_value(value: str) -> str:
    try:
        p = float(value)
    except ValueError:
        return "–"
    if not math.isfinite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def table2_block(rows: list[dict[str, str]]) -> str:
    """Table 2 as in the paper: AR per group of pairs, its interval, the SD across seeds, the paper's AR."""
    groups = sorted({r.get("data_group", "") for r in rows})
    header = ["pair", "pairs of runs", "AR [95% interval]", "SD across seeds", "paper"]
    if len(groups) > 1:
        header = ["data group", *header]
    body = []
    for r in rows:
        ar = f"{number(r['ar'], 4)} [{number(r['ci_low'], 4)}, {number(r['ci_high'], 4)}]"
        cells = [r["pair"], r["n_pairs"], ar, number(r["seed_sd"], 4), number(r["paper_ar"], 4)]
        body.append([r.get("data_group", ""), *cells] if len(groups) > 1 else cells)
    return table(header, body) if body else "No pair of runs to compare (one finished run)."


def statistics_block(rows: list[dict[str, str]]) -> str:
    """The tests over run relabellings: AR (primary), ratio profiles and object-importance rankings."""
    header = ["measure", "test", "between architectures", "between seeds", "relabellings", "p", "p (Holm)"]
    several = len({r.get("data_group", "") for r in rows}) > 1
    body = [
        [
            *([r.get("data_group", "")] if several else []),
            r["comparison"],
            "primary" if r["primary"] == "True" else "secondary",
            number(r["between_mean"], 3),
            number(r["within_mean"], 3),
            r["n_relabellings"],
            p_value(r["p_value"]),
            p_value(r["p_adjusted"]),
        ]
        for r in rows
    ]
    header = ["data group", *header] if several else header
    return table(header, body) if body else "No test (the sweep needs two architectures and two seeds)."


def reading(body: str) -> str:
    """The section's `**Reading:**` paragraph, or ''."""
    for paragraph in body.split("\n\n"):
        if paragraph.startswith("**Reading:**"):
            return plain(paragraph)
    return ""


def results_block(sweep_dir: Path) -> str:
    """The Markdown written between the markers, from SWEEP_DIR/report/."""
    report = Path(sweep_dir) / REPORT_DIR
    found = sections(read_text(report / REPORT_MD))
    table2_rows, tests = read_rows(report / TABLE2), read_rows(report / STATISTICS)
    if RUNS not in found:
        raise ResultsDocError(f"{report / REPORT_MD}: no '## {RUNS}' section")
    parts = [
        f"Generated by `python tools/results_doc.py SWEEP_DIR` from the sweep report of "
        f"`{Path(sweep_dir).resolve().name}` (its report/{REPORT_MD}, {TABLE2} and {STATISTICS}); "
        "do not edit by hand, rerun the tool.",
    ]
    headline = found.get(HEADLINE)
    missing = "This sweep has no headline: no run has faithfulness.csv (causal or faithfulness step off)."
    parts += [f"### {HEADLINE}", plain(headline) if headline else missing]
    parts += ["### Test accuracy per run", plain(found[RUNS])]
    table2_readings = [reading(body) for title, body in found.items() if title.startswith(TABLE2_TITLE)]
    parts += ["### Table 2: average residual AR between runs", *[r for r in table2_readings if r]]
    parts.append(table2_block(table2_rows))
    stats_readings = [reading(body) for title, body in found.items() if title.startswith(STATISTICS_TITLE)]
    parts += ["### Do architectures differ more than seeds?", *[r for r in stats_readings if r]]
    parts.append(statistics_block(tests))
    if CONCEPTS in found:
        parts += [f"### {CONCEPTS}", plain(found[CONCEPTS])]
    return "\n\n".join(parts)


def replace_block(doc: str, block: str, name: str = "the document", which: str = BLOCK) -> str:
    """`doc` with the text between the markers of block `which` replaced by `block`; the rest as it was."""
    begin, finish = markers(which)
    start, end = doc.find(begin), doc.find(finish)
    for marker, at in ((begin, start), (finish, end)):
        if at < 0 or doc.count(marker) > 1:
            raise ResultsDocError(f"{name}: needs exactly one {marker} line")
    if end < start:
        raise ResultsDocError(f"{name}: {finish} comes before {begin}")
    return doc[: start + len(begin)] + "\n\n" + block.strip() + "\n\n" + doc[end:]


def update(sweep_dir: Path, doc: Path = DOC, which: str = BLOCK) -> str:
    """Replace block `which` of `doc` with `sweep_dir`'s results; return the block written."""
    block = results_block(sweep_dir)
    begin, finish = markers(which)
    original = read_text(doc, f"the document to update, with {begin} and {finish}")
    doc.write_text(replace_block(original, block, str(doc), which))
    return block


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a finished sweep folder (outputs/sweeps/<stamp>)")
    parser.add_argument("--doc", type=Path, default=DOC, help=f"the document to update (default: {DOC})")
    parser.add_argument("--block", default=BLOCK, help=f"the markers' name (default: {BLOCK})")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[a-z][a-z0-9_]*", args.block):
        parser.error(f"--block {args.block!r}: lower-case letters, digits and _ only")
    try:
        block = update(args.sweep_dir, args.doc, args.block)
    except ResultsDocError as err:
        print(f"results_doc: {err}", file=sys.stderr)
        return 2
    print(f"results_doc: {len(block.splitlines())} lines from {args.sweep_dir} -> {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
