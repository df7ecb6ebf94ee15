"""The sweep report's faithfulness and sanity sections on a fake sweep whose numbers are known by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from citylens.pipeline.faithfulness_step import write_faithfulness
from citylens.report.faithfulness import variant_dirs
from citylens.report.sweep import Options, build_report

FAST = Options(n_boot=50, n_perm=100, examples_per_city=1)
# The default analysis variant's folder name (<run>/analysis/<variant>/).
VARIANT = "gradcam-last_block-label-all-t0.5"
TOKYO_EFFECTS = {"signboard": 0.3, "fence": 0.2, "car": 0.1, "road": 0.0, "building": -0.1}
PITT_EFFECTS = {"skyscraper": 0.4, "earth": 0.3, "car": 0.2, "road": 0.1}
# Pittsburgh's R runs against the effects in every run (rho -1, P@2 0).
PITT_RATIOS = {"skyscraper": 0.1, "earth": 0.2, "car": 0.3, "road": 0.4}
# Tokyo's R follows the effects (rho 1, P@2 1), or with fence and car swapped (rho 0.9, P@2 0.5).
TOKYO_SAME = {"signboard": 0.9, "fence": 0.7, "car": 0.5, "road": 0.3, "building": 0.1}
TOKYO_SWAPPED = {"signboard": 0.9, "car": 0.7, "fence": 0.5, "road": 0.3, "building": 0.1}


@pytest.fixture(scope="session")
def planted_run(causal_rows, hand_masks, make_run, planted):
    def planted_run(run_dir: Path, arch: str, seed: int) -> Path:
        """A finished fake run on 'synthetic' data with the planted objects in its store's provenance."""
        make_run(run_dir, arch, seed, hand_masks["A"])
        for meta_path in run_dir.glob("**/masks/meta.json"):
            meta = json.loads(meta_path.read_text())
            meta["dataset"] = {"kind": "synthetic", "planted": planted}
            meta_path.write_text(json.dumps(meta))
        causal = pd.DataFrame(causal_rows("tokyo", TOKYO_EFFECTS) + causal_rows("pittsburgh", PITT_EFFECTS))
        causal.to_csv(run_dir / "causal.csv", index=False)
        return run_dir

    return planted_run


@pytest.fixture(scope="session")
def analysis_files(planted, ratio_rows):
    def analysis_files(
        folder: Path, tokyo: dict[str, float], full_rho: float, explainer: str = "gradcam"
    ) -> None:
        """object_ratios.csv, faithfulness.csv (computed) and sanity.csv (hand-made) in one analysis
        folder, which holds a mask store (the default variant's) like every variant folder explain makes."""
        if not (folder / "masks").is_dir():
            shutil.copytree(folder.parent / VARIANT / "masks", folder / "masks")
        ratios = pd.DataFrame(ratio_rows("tokyo", tokyo) + ratio_rows("pittsburgh", PITT_RATIOS))
        ratios.to_csv(folder / "object_ratios.csv", index=False)
        causal = pd.read_csv(folder.parent.parent / "causal.csv")
        write_faithfulness(ratios, causal, folder, 0.5, planted)
        steps = [(0, "none", 1.0), (1, "fc", 0.6), (2, "features.0", full_rho + 0.05), (3, "full", full_rho)]
        pd.DataFrame(
            [
                {
                    "step": i,
                    "step_name": n,
                    "modules": "",
                    "explainer": explainer,
                    "mean_spearman": r,
                    "ci_low": r,
                    "ci_high": r,
                    "n_images": 60,
                    "n_undefined": 4,
                }
                for i, n, r in steps
            ]
        ).to_csv(folder / "sanity.csv", index=False)

    return analysis_files


def test_section_tables_and_flag(analysis_files, planted_run, make_sweep, tmp_path: Path):
    sweep = make_sweep(tmp_path)
    for name, arch, seed, tokyo, full in (
        ("0_simple-s0", "simple", 0, TOKYO_SAME, 0.1),
        ("1_simple-s1", "simple", 1, TOKYO_SWAPPED, 0.3),
        ("2_simpler-s0", "simpler", 0, TOKYO_SAME, 0.8),
    ):
        analysis_files(planted_run(sweep / name, arch, seed) / "analysis" / VARIANT, tokyo, full)
    out = build_report(sweep, FAST)
    summary = pd.read_csv(out / "faithfulness_summary.csv").set_index(["arch", "city"])
    assert summary.loc[("simple", "tokyo"), "spearman"] == pytest.approx(0.95)
    assert summary.loc[("simple", "tokyo"), "spearman_min"] == pytest.approx(0.9)
    assert summary.loc[("simple", "tokyo"), "p_at_k"] == pytest.approx(0.75)
    assert summary.loc[("simple", "pittsburgh"), "spearman"] == pytest.approx(-1.0)
    assert summary.loc[("simpler", "tokyo"), "n_runs"] == 1
    assert summary.loc[("simple", "tokyo"), "causal_top"] == "signboard; fence"
    assert summary.loc[("simple", "tokyo"), "explained_top"] == "signboard; fence (1/2 runs)"
    assert summary.loc[("simple", "pittsburgh"), "explained_planted_p_at_k"] == 0
    text = (out / "report.md").read_text()
    assert "## Do the explanations point at what the networks use?" in text
    # rho over the 6 run-city cases: (1 - 1 + 0.9 - 1 + 1 - 1) / 6; P@k (1 + 0 + 0.5 + 0 + 1 + 0) / 6.
    assert "mean Spearman rho -0.02 and mean P@k 0.42 over 6 run-city cases" in text
    assert "highest rho simpler (0.00), lowest simple (-0.03)" in text
    assert "exactly the planted cues in 6 of 6 cases; the explanations' top-k in 2" in text
    assert "| simple | tokyo | 2 | 0.95 [0.90, 1.00] | 0.75 [0.50, 1.00] | 2 |" in text
    sanity = pd.read_csv(out / "sanity_summary.csv")
    full = sanity[sanity["step_name"] == "full"].set_index("arch")["spearman"]
    assert full.to_dict() == pytest.approx({"simple": 0.2, "simpler": 0.8})
    assert "1 of 2 explainer-architecture pairs keep their masks similar" in text
    assert "gradcam on simpler (rho 0.80)" in text and "(flag: rho > 0.5; 64 test images per run)" in text
    assert (
        "| gradcam | simple | 2 | fc: 0.60 [0.60, 0.60] | 0.25 [0.15, 0.35] | 0.20 [0.10, 0.30] | no |"
        in text
    )
    for name in ("faithfulness_ratio_vs_effect.png", "sanity_cascade.png"):
        assert (out / name).stat().st_size > 10_000


def test_variant_folders_are_found_and_listed(analysis_files, planted_run, make_sweep, tmp_path: Path):
    sweep = make_sweep(tmp_path)
    run = planted_run(sweep / "0_simple-s0", "simple", 0)
    analysis_files(run / "analysis" / "gradcam-last_block", TOKYO_SAME, 0.1)
    analysis_files(run / "analysis" / "layercam-last_conv", TOKYO_SWAPPED, 0.7, explainer="layercam")
    found = variant_dirs(SimpleNamespace(path=run))
    assert (
        found["layercam-last_conv"] == run / "analysis" / "layercam-last_conv"
        and "gradcam-last_block" in found
    )
    out = build_report(sweep, FAST)
    summary = pd.read_csv(out / "faithfulness_summary.csv")
    tokyo = summary[summary["city"] == "tokyo"].set_index("variant")["spearman"]
    assert tokyo.to_dict() == pytest.approx({"gradcam-last_block": 1.0, "layercam-last_conv": 0.9})
    text = (out / "report.md").read_text()
    assert "(gradcam-last_block variant)" in text and "| layercam-last_conv | simple | tokyo |" in text
    assert "layercam on simple (rho 0.70)" in text


def test_no_files_no_sections(hand_masks, make_run, make_sweep, tmp_path: Path):
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"])
    assert variant_dirs(SimpleNamespace(path=tmp_path)) == {"default": tmp_path}
    text = (build_report(sweep, FAST) / "report.md").read_text()
    assert "Do the explanations point" not in text and "Sanity check" not in text
