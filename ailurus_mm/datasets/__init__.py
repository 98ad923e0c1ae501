"""Datasets registered with MMSegmentation's ``DATASETS`` registry."""

from .camvid import CamVidDataset

__all__ = ['CamVidDataset']
