"""Analysis library: object ratios, residuals, mask embedding, statistics, faithfulness and the randomisation
sanity check, as plain functions on arrays (the sanity check on a network and its images).

No Lightning or Hydra inside, so a notebook can call these directly; callbacks and the CLI are thin layers.
"""

from citylens.analysis.embedding import embed_masks, pca_features, resample_masks, tsne_2d
from citylens.analysis.faithfulness import faithfulness
from citylens.analysis.ratios import RatioAccumulator, object_ratios, planted_recovery, ratio_summary
from citylens.analysis.residuals import PairwiseResiduals, average_residual, residuals, to_common_size
from citylens.analysis.sanity import randomisation_steps, sanity_check
from citylens.analysis.stats import bootstrap_ci, holm, ratio_ci, ratio_profile_distance, relabel_test

__all__ = [
    "PairwiseResiduals",
    "RatioAccumulator",
    "average_residual",
    "bootstrap_ci",
    "embed_masks",
    "holm",
    "faithfulness",
    "object_ratios",
    "pca_features",
    "planted_recovery",
    "ratio_ci",
    "randomisation_steps",
    "ratio_profile_distance",
    "ratio_summary",
    "relabel_test",
    "resample_masks",
    "residuals",
    "sanity_check",
    "to_common_size",
    "tsne_2d",
]
