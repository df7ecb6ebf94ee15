"""Semantic segmentation into ADE20K classes: segmenters and the label-map cache.

`SegformerSegmenter` imports transformers only when constructed (the optional `segment` extra).
"""

from citylens.segment.base import (
    NUM_CLASSES,
    NetworkSegmenter,
    Segmenter,
    default_device,
    file_fingerprint,
)
from citylens.segment.cache import LabelMapCache, ids_digest, label_cache_key
from citylens.segment.csail import ARCHS as CSAIL_ARCHS
from citylens.segment.csail import CsailResNet, CsailSegmenter, PPMDeepsup, UPerNet, build_csail
from citylens.segment.ground_truth import GroundTruthSegmenter, ade20k_annotation_to_labels
from citylens.segment.segformer import SegformerSegmenter, resolve_model_dir

__all__ = [
    "CSAIL_ARCHS",
    "NUM_CLASSES",
    "CsailResNet",
    "CsailSegmenter",
    "GroundTruthSegmenter",
    "LabelMapCache",
    "NetworkSegmenter",
    "PPMDeepsup",
    "SegformerSegmenter",
    "Segmenter",
    "UPerNet",
    "ade20k_annotation_to_labels",
    "build_csail",
    "default_device",
    "file_fingerprint",
    "ids_digest",
    "label_cache_key",
    "resolve_model_dir",
]
