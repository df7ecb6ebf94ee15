"""Faithfulness of the object-ratio ranking against hand-built causal tables whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from citylens.analysis.faithfulness import (
    FAITHFULNESS_COLUMNS,
    STATISTIC_COLUMNS,
    faithfulness,
    faithfulness_by_statistic,
    precision_at_k,
)


def test_agreeing_and_opposite_rankings_on_synthetic_data(hand_causal, hand_ratios, planted):
    table = faithfulness(hand_ratios, hand_causal, threshold=0.5, planted=planted)
    assert list(table.columns) == FAITHFULNESS_COLUMNS
    tokyo, pitt = (table[table["city"] == c].iloc[0] for c in ("tokyo", "pittsburgh"))
    # Only kept objects at 0.5 that have an effect: sky (not kept) and tree (no ratio) are left out.
    assert tokyo["n_objects"] == 5 and pitt["n_objects"] == 4
    assert tokyo["spearman"] == pytest.approx(1.0) and pitt["spearman"] == pytest.approx(-1.0)
    assert tokyo["k"] == 2 and tokyo["p_at_k"] == 1.0 and pitt["p_at_k"] == 0.0
    assert tokyo["causal_top"] == "signboard; fence" and tokyo["explained_top"] == "signboard; fence"
    assert pitt["causal_top"] == "skyscraper; earth" and pitt["explained_top"] == "road; car"
    assert pitt["causal_planted_p_at_k"] == 1.0 and pitt["explained_planted_p_at_k"] == 0.0
    assert pitt["planted"] == "skyscraper; earth" and (table["threshold"] == 0.5).all()
    assert (table["method"] == "counterfactual").all()


def test_real_data_uses_k3_and_partial_agreement(causal_rows, ratio_rows):
    # R order a b c d e; effect order a c d b e: top 3 share {a, c}; rank differences 0 2 1 1 0 -> rho 0.7.
    names = ["car", "road", "building", "tree", "sky"]
    ratios = pd.DataFrame(ratio_rows("tokyo", dict(zip(names, [0.5, 0.4, 0.3, 0.2, 0.1]))))
    effects = dict(zip(["car", "building", "tree", "road", "sky"], [0.5, 0.4, 0.3, 0.2, 0.1]))
    causal = pd.DataFrame(causal_rows("tokyo", effects, "deletion"))
    row = faithfulness(ratios, causal).iloc[0]
    assert row["k"] == 3 and row["p_at_k"] == pytest.approx(2 / 3)
    assert row["spearman"] == pytest.approx(0.7)
    assert row["method"] == "deletion" and row["planted"] == ""
    assert np.isnan(row["causal_planted_p_at_k"]) and np.isnan(row["explained_planted_p_at_k"])


def test_ties_match_scipy_and_methods_are_scored_apart(causal_rows, ratio_rows):
    rng = np.random.default_rng(0)
    names = ["car", "road", "building", "tree", "sky", "person", "fence", "signboard"]
    r = np.round(rng.random(len(names)), 1)
    e = np.round(rng.normal(size=len(names)), 1)
    ratios = pd.DataFrame(ratio_rows("tokyo", dict(zip(names, r))))
    causal = pd.DataFrame(
        causal_rows("tokyo", dict(zip(names, e)), "counterfactual")
        + causal_rows("tokyo", dict(zip(names, r)), "deletion")
    )
    table = faithfulness(ratios, causal).set_index("method")
    assert table.loc["counterfactual", "spearman"] == pytest.approx(stats.spearmanr(r, e).statistic)
    assert table.loc["deletion", "spearman"] == pytest.approx(1.0)
    assert table.loc["deletion", "p_at_k"] == 1.0


def test_too_few_objects_give_nan_and_k_is_capped(causal_rows, ratio_rows):
    ratios = pd.DataFrame(ratio_rows("tokyo", {"signboard": 0.9, "car": 0.1}))
    causal = pd.DataFrame(causal_rows("tokyo", {"signboard": 0.0, "car": 0.2}))
    row = faithfulness(ratios, causal, planted={"tokyo": ["signboard", "fence", "car"]}).iloc[0]
    assert np.isnan(row["spearman"]) and row["k"] == 2 and row["p_at_k"] == 1.0
    constant = pd.DataFrame(causal_rows("tokyo", {"signboard": 0.1, "car": 0.1, "road": 0.1}))
    assert (
        faithfulness(pd.DataFrame(ratio_rows("tokyo", {"signboard": 1, "car": 0, "road": 0.5})), constant)[
            "spearman"
        ]
        .isna()
        .all()
    )


def test_bad_tables_are_refused_by_name(hand_causal, hand_ratios):
    with pytest.raises(ValueError, match=r"run/causal.csv: missing column\(s\) \['effect'\]"):
        faithfulness(
            hand_ratios,
            hand_causal.drop(columns="effect"),
            0.5,
            names=("run/object_ratios.csv", "run/causal.csv"),
        )
    with pytest.raises(ValueError, match="no rows at threshold 0.7"):
        faithfulness(hand_ratios, hand_causal, threshold=0.7)
    with pytest.raises(ValueError, match="pass threshold="):
        faithfulness(hand_ratios, hand_causal)


def test_precision_at_k():
    assert precision_at_k(["a", "b", "c"], ["c", "b", "a"], 2) == 0.5
    assert np.isnan(precision_at_k([], [], 0))


def test_the_object_attribution_is_scored_beside_the_ratio(hand_causal, hand_ratios, planted):
    # A_p^c reverses Pittsburgh's R ranking (R rho -1): the attribution then agrees with the effects.
    at = hand_ratios[hand_ratios["threshold"] == 0.5]
    attribution = at[["city", "object", "kept"]].assign(
        attribution=np.where(at["city"] == "pittsburgh", -at["ratio"], at["ratio"])
    )
    table = faithfulness_by_statistic(hand_ratios, attribution, hand_causal, 0.5, planted)
    assert (
        list(table.columns) == STATISTIC_COLUMNS
        and list(table["statistic"]) == ["ratio"] * 2 + ["attribution"] * 2
    )
    ratio, attr = (table[table["statistic"] == s].set_index("city") for s in ("ratio", "attribution"))
    assert ratio.loc["pittsburgh", "spearman"] == pytest.approx(-1.0)
    assert (
        attr.loc["pittsburgh", "spearman"] == pytest.approx(1.0) and attr.loc["pittsburgh", "p_at_k"] == 1.0
    )
    assert attr.loc["tokyo", "spearman"] == pytest.approx(1.0) and attr["threshold"].isna().all()
    assert attr.loc["pittsburgh", "explained_top"] == "skyscraper; earth"
    with pytest.raises(ValueError, match="missing column"):
        faithfulness(attribution.drop(columns="attribution"), hand_causal, value="attribution")
