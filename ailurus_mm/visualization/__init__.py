"""Showing what AiluRus did to an image.

``overlay`` (pure numpy/torch): :func:`make_visualization` and
:func:`cluster_overlay`. ``hooks`` (mmseg, imported by ``ailurus_mm``):
the ``AiluRusSegVisualizationHook`` and ``AiluRusSegLocalVisualizer`` behind
``tools/test.py --show-dir``.
"""

from .overlay import cluster_overlay, make_visualization, token_label_map

__all__ = ['cluster_overlay', 'make_visualization', 'token_label_map']
