"""The faithfulness step: the sanity check's balanced image sample, explainers by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from citylens.pipeline.faithfulness_step import explainer_factory, sanity_sample


def test_sample_is_balanced_and_reads_the_right_rows(split_data):
    data = split_data()
    images, labels, idx = sanity_sample(data, 6)
    assert len(idx) == 6 and np.bincount(labels).tolist() == [3, 3]
    expected = torch.from_numpy(data.views[[data.row[data.splits["test"][i].image_id] for i in idx]])
    restored = images * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    restored = (restored + torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) * 255
    np.testing.assert_allclose(restored.permute(0, 2, 3, 1).numpy(), expected.numpy(), atol=1e-3)


def test_unknown_explainer_refused_by_key():
    with pytest.raises(ValueError, match="explainer: unknown method 'occlusion'"):
        explainer_factory("occlusion")
