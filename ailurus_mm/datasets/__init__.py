"""Datasets: CamVid (MMSegmentation's ``DATASETS``) and class-agnostic COCO
(MMDetection's ``DATASETS`` / ``METRICS``)."""

from .camvid import CamVidDataset
from .coco_agnostic import CocoAgnosticDataset, CocoAgnosticMetric

__all__ = ['CamVidDataset', 'CocoAgnosticDataset', 'CocoAgnosticMetric']
