"""Showing what AiluRus did to an image."""

from .overlay import cluster_overlay, token_label_map

__all__ = ['cluster_overlay', 'token_label_map']
