"""tools/results_doc.py writes a sweep report's key tables into docs/results.md; README and docs link only to
files that exist."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "results_doc.py"
_spec = importlib.util.spec_from_file_location("results_doc", TOOL)
rd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rd)

REPORT_MD = """# Sweep report: 2026-01-02_03-04-05

`/somewhere/outputs/sweeps/2026-01-02_03-04-05`

Browse every test image of every run: [explorer.html](explorer.html)

## What makes each city recognisable

**Reading:** The objects are ranked by the object attribution A of the occlusion variant (mean Spearman rho
0.89, P@k = 1 in 9 of 16 run-city cases).

| architecture | city | runs | top objects by attribution | paper's R, top 3 |
|---|---|---|---|---|
| vgg11 | tokyo | 2 | signboard* 0.41 ± 0.02, fence* 0.12 ± 0.03 | car 0.90 ± 0.01 |

![What makes each city recognisable](headline_attribution.png)

## Runs

**Reading:** 2 finished runs (1 architectures), test accuracy 0.871 to 0.929.

| run | label | architecture | seed | test accuracy | test images |
|---|---|---|---|---|---|
| 0_vgg11-s0 | vgg11-s0 | vgg11 | 0 | 0.929 | 280 |
| 1_vgg11-s1 | vgg11-s1 | vgg11 | 1 | 0.871 | 280 |

## Table 2: average residual between runs

**Reading:** Mean AR between seeds of one architecture 0.216.

| pair | pairs of runs | AR [95% interval] | SD across seeds | paper |
|---|---|---|---|---|
| vgg11 vs vgg11 retrained | 1 | 0.2160 [0.2000, 0.2300] | – | 0.2679 |

## Statistics: do architectures differ more than seeds?

**Reading:** One architecture only, so the test needs a second architecture in the sweep.

## Figure 3: t-SNE of the masks, every run

**Reading:** Cities separate.

![Figure 3](fig3_tsne_runs.png)

## Concepts the networks found

**Reading:** A city's most important concept sits on an object of its counterfactual top 2 in 13 of 16 cases.

![vgg11-s0: tokyo](../0_vgg11-s0/concepts/figures/concepts_tokyo.png)
"""

TABLE2 = """group,arch_a,arch_b,pair,n_pairs,ar,ci_low,ci_high,seed_sd,paper_ar,data_group
seed,vgg11,vgg11,vgg11 vs vgg11 retrained,1,0.21601,0.20004,0.23003,,0.2679,1
"""

STATISTICS = "\n".join(
    [
        "comparison,test,between_mean,within_mean,n_between,n_within,n_relabellings,p_value,p_adjusted,"
        "primary,data_group",
        'average residual AR,"runs relabelled",0.295,0.216,24,4,105,0.0095,0.0095,True,1',
        "object-importance ranking distance (1 - Spearman rho),relabelled,0.220,0.117,24,4,105,0.0145,0.029,"
        "False,1",
    ]
)

DOC = """# Results

Hand-written context that the tool must leave alone.

<!-- results:begin -->
an older block, to be replaced
<!-- results:end -->

## History

More hand-written text.
"""


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A finished sweep's report folder with just the files the tool reads."""
    report = tmp_path / "2026-01-02_03-04-05" / "report"
    report.mkdir(parents=True)
    (report / "report.md").write_text(REPORT_MD)
    (report / "table2_grouped.csv").write_text(TABLE2)
    (report / "statistics.csv").write_text(STATISTICS)
    return report.parent


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "results.md"
    path.write_text(DOC)
    return path


def outside(text: str) -> tuple[str, str]:
    """The text before the begin marker and after the end marker."""
    head, _, rest = text.partition(rd.BEGIN)
    _, _, tail = rest.partition(rd.END)
    return head, tail


def test_the_block_is_replaced_and_the_rest_left_as_it_was(sweep: Path, doc: Path, capsys):
    assert rd.main([str(sweep), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert outside(text) == outside(DOC)
    block = text.split(rd.BEGIN)[1].split(rd.END)[0]
    assert "an older block" not in block
    assert "`2026-01-02_03-04-05`" in block  # stamped with the sweep folder's name
    assert "| 0_vgg11-s0 | vgg11-s0 | vgg11 | 0 | 0.929 | 280 |" in block  # test accuracy per run
    assert "mean Spearman rho\n0.89, P@k = 1 in 9 of 16" in block  # the headline's reading
    assert "| vgg11 | tokyo | 2 | signboard* 0.41 ± 0.02, fence* 0.12 ± 0.03 | car 0.90 ± 0.01 |" in block
    assert "| vgg11 vs vgg11 retrained | 1 | 0.2160 [0.2000, 0.2300] | – | 0.2679 |" in block  # Table 2
    assert "Mean AR between seeds of one architecture 0.216." in block
    assert (
        "| object-importance ranking distance (1 - Spearman rho) | secondary | 0.220 | 0.117 | 105 | 0.0145 "
        "| 0.029 |" in block
    )
    assert "| average residual AR | primary | 0.295 | 0.216 | 105 | 0.0095 | 0.0095 |" in block
    # Figures and relative links point into the report folder: dropped / made plain text.
    assert "![" not in block and "](" not in block
    assert "Figure 3" not in block  # only the key sections
    assert "### Concepts the networks found" in block and "top 2 in 13 of 16 cases" in block
    assert "results_doc: " in capsys.readouterr().out


def test_a_second_run_gives_the_same_document(sweep: Path, doc: Path):
    rd.main([str(sweep), "--doc", str(doc)])
    first = doc.read_text()
    rd.main([str(sweep), "--doc", str(doc)])
    assert doc.read_text() == first


@pytest.mark.parametrize("name", ["report.md", "table2_grouped.csv", "statistics.csv"])
def test_a_missing_report_file_is_named_and_the_document_kept(sweep: Path, doc: Path, name: str, capsys):
    (sweep / "report" / name).unlink()
    assert rd.main([str(sweep), "--doc", str(doc)]) == 2
    err = capsys.readouterr().err
    assert str(sweep / "report" / name) in err and "missing" in err
    assert doc.read_text() == DOC


def test_a_report_without_runs_is_refused(sweep: Path, doc: Path, capsys):
    (sweep / "report" / "report.md").write_text(REPORT_MD.replace("## Runs", "## Something else"))
    assert rd.main([str(sweep), "--doc", str(doc)]) == 2
    assert "no '## Runs' section" in capsys.readouterr().err


@pytest.mark.parametrize("marker", [rd.BEGIN, rd.END])
def test_a_document_without_a_marker_is_refused(sweep: Path, doc: Path, marker: str, capsys):
    doc.write_text(DOC.replace(marker, ""))
    assert rd.main([str(sweep), "--doc", str(doc)]) == 2
    assert marker in capsys.readouterr().err
    assert doc.read_text() == DOC.replace(marker, "")


def test_a_sweep_without_a_headline_says_so(sweep: Path, doc: Path):
    head, _, rest = REPORT_MD.partition("## What makes")
    (sweep / "report" / "report.md").write_text(head + "## Runs" + rest.partition("## Runs")[2])
    assert rd.main([str(sweep), "--doc", str(doc)]) == 0
    assert "This sweep has no headline" in doc.read_text()


def test_a_named_block_is_replaced_and_the_default_block_left(sweep: Path, doc: Path):
    begin, end = rd.markers("paper_synthetic")
    doc.write_text(DOC + f"\n## At 224 px\n\n{begin}\n\nold\n\n{end}\n\nafter\n")
    assert rd.main([str(sweep), "--doc", str(doc), "--block", "paper_synthetic"]) == 0
    text = doc.read_text()
    assert text.startswith(DOC) and text.endswith(f"{end}\n\nafter\n")
    named = text.split(begin)[1].split(end)[0]
    assert "old" not in named and "`2026-01-02_03-04-05`" in named
    assert rd.main([str(sweep), "--doc", str(doc), "--block", "nowhere"]) == 2
    with pytest.raises(SystemExit):
        rd.main([str(sweep), "--doc", str(doc), "--block", "bad name -->"])


@pytest.mark.parametrize("block", [rd.BLOCK, "paper_synthetic"])
def test_the_repository_document_has_its_markers(block: str):
    text = (ROOT / "docs" / "results.md").read_text()
    begin, end = rd.markers(block)
    assert text.count(begin) == 1 and text.count(end) == 1
    assert text.index(begin) < text.index(end)


# ---------------------------------------------------------------- links of README.md and docs/*.md

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(text: str) -> list[str]:
    """The link targets of a Markdown text outside code, without web links and anchor-only links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"(https?|mailto):|#", t)]


def test_the_link_finder_skips_web_links_anchors_and_code():
    text = (
        "[a](docs/a.md) ![b](b.png) [c](https://x.org) [d](#top) [e](f.md#part)\n"
        "`[g](g.md)`\n```\n[h](h.md)\n```\n"
    )
    assert relative_links(text) == ["docs/a.md", "b.png", "f.md#part"]


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name
)
def test_every_relative_link_points_at_a_file(page: Path):
    broken = [
        target
        for target in relative_links(page.read_text())
        if not (page.parent / target.split("#")[0]).exists()
    ]
    assert broken == [], f"{page.relative_to(ROOT)} links to missing files: {broken}"
