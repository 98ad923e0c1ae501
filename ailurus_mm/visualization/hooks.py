"""Adaptive resolution in mmseg's test visualisation (``tools/test.py --show-dir``).

:class:`AiluRusSegVisualizationHook` (mmseg ``HOOKS``) is mmseg's
``SegVisualizationHook`` that also reads the assignment of the batch just run
(``model.backbone.last_assignment``) and hands it to the visualizer;
:class:`AiluRusSegLocalVisualizer` (mmseg ``VISUALIZERS``) is mmseg's
``SegLocalVisualizer`` that draws, per image, the cluster borders (one-token
clusters tinted) left of the ground truth and the prediction, and sends that
one picture to every configured vis backend (local files, TensorBoard, ...).
Select both in a config::

    default_hooks = dict(visualization=dict(type='AiluRusSegVisualizationHook', interval=1))
    visualizer = dict(type='AiluRusSegLocalVisualizer', vis_backends=[...], name='visualizer')

and run ``python tools/test.py CONFIG CKPT --show-dir DIR`` (the stock script
switches the hook on and sets the visualizer's ``save_dir``). With any other
visualizer the hook still works: the stock drawing plus a separate
``<name>_clusters`` image.
"""

from __future__ import annotations

import os.path as osp
import warnings
from typing import Optional, Sequence

import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmengine.dist import master_only
from mmengine.model import is_model_wrapper
from mmseg.engine.hooks import SegVisualizationHook
from mmseg.registry import HOOKS, VISUALIZERS
from mmseg.structures import SegDataSample
from mmseg.visualization import SegLocalVisualizer

from ..ops import ClusterAssignment
from .overlay import make_visualization

__all__ = ['AiluRusSegVisualizationHook', 'AiluRusSegLocalVisualizer']


@VISUALIZERS.register_module()
class AiluRusSegLocalVisualizer(SegLocalVisualizer):
    """``SegLocalVisualizer`` that puts the AiluRus clusters next to the
    ground truth and prediction.

    Args:
        name, **kwargs: those of ``SegLocalVisualizer`` (``image``,
            ``vis_backends``, ``save_dir``, ``classes``, ``palette``,
            ``dataset_name``, ``alpha``, ...).
        border_color (Sequence[int]): RGB colour of the cluster borders.
        single_color (Sequence[int]): RGB tint of one-token clusters.
        single_alpha (float): tint strength in ``[0, 1]``.
    """

    def __init__(
        self,
        name: str = 'visualizer',
        border_color: Sequence[int] = (255, 255, 0),
        single_color: Sequence[int] = (255, 0, 255),
        single_alpha: float = 0.35,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= single_alpha <= 1.0:
            raise ValueError(f'single_alpha={single_alpha} is outside [0, 1]')
        self.cluster_style = dict(
            border_color=tuple(border_color),
            single_color=tuple(single_color),
            single_alpha=single_alpha,
        )

    def draw_clusters(
        self,
        image: np.ndarray,
        assignment: ClusterAssignment,
        index: int = 0,
        patch_size: Optional[int] = None,
        input_size: Optional[Sequence[int]] = None,
    ) -> np.ndarray:
        """The RGB overlay of :func:`~ailurus_mm.visualization.make_visualization`."""
        return make_visualization(
            image, assignment, index, patch_size, input_size, **self.cluster_style
        )

    def draw_datasample(
        self,
        image: np.ndarray,
        data_sample: Optional[SegDataSample],
        draw_gt: bool = True,
        draw_pred: bool = True,
        with_labels: bool = True,
    ) -> np.ndarray:
        """Ground truth and prediction side by side, as the stock
        ``SegLocalVisualizer.add_datasample`` composes them (mmseg 1.2.2),
        returned instead of stored."""
        classes = self.dataset_meta.get('classes', None)
        palette = self.dataset_meta.get('palette', None)
        panels = []
        for enabled, seg_key, depth_key in (
            (draw_gt, 'gt_sem_seg', 'gt_depth_map'),
            (draw_pred, 'pred_sem_seg', 'pred_depth_map'),
        ):
            if not enabled or data_sample is None:
                continue
            drawn = None
            if seg_key in data_sample:
                assert classes is not None, (
                    'class information is not provided when visualizing '
                    'semantic segmentation results.'
                )
                drawn = self._draw_sem_seg(
                    image, data_sample.get(seg_key), classes, palette, with_labels
                )
            if depth_key in data_sample:
                drawn = self._draw_depth_map(
                    drawn if drawn is not None else image, data_sample.get(depth_key)
                )
            if drawn is not None:
                panels.append(drawn)
        return np.concatenate(panels, axis=1) if panels else image

    @master_only
    def add_datasample(
        self,
        name: str,
        image: np.ndarray,
        data_sample: Optional[SegDataSample] = None,
        draw_gt: bool = True,
        draw_pred: bool = True,
        show: bool = False,
        wait_time: float = 0,
        out_file: Optional[str] = None,
        step: int = 0,
        with_labels: Optional[bool] = True,
        assignment: Optional[ClusterAssignment] = None,
        index: int = 0,
        patch_size: Optional[int] = None,
        input_size: Optional[Sequence[int]] = None,
    ) -> None:
        """The stock ``add_datasample`` with the clusters as the first panel.

        Args:
            name, image, data_sample, draw_gt, draw_pred, show, wait_time,
                out_file, step, with_labels: as ``SegLocalVisualizer``.
            assignment (ClusterAssignment, optional): the batch's assignment
                (None: the stock drawing).
            index (int): this image's index in the batch.
            patch_size (int, optional): input pixels per token side.
            input_size (Sequence[int], optional): ``(h, w)`` of the image
                inside the network input (``img_shape``); see
                :func:`~ailurus_mm.visualization.make_visualization`.
        """
        if assignment is None:
            return super().add_datasample(
                name,
                image,
                data_sample,
                draw_gt=draw_gt,
                draw_pred=draw_pred,
                show=show,
                wait_time=wait_time,
                out_file=out_file,
                step=step,
                with_labels=with_labels,
            )
        clusters = self.draw_clusters(image, assignment, index, patch_size, input_size)
        drawn = self.draw_datasample(image, data_sample, draw_gt, draw_pred, with_labels)
        drawn = np.concatenate([clusters, drawn], axis=1) if drawn is not image else clusters
        if show:
            self.show(drawn, win_name=name, wait_time=wait_time)
        if out_file is not None:
            mmcv.imwrite(mmcv.rgb2bgr(drawn), out_file)
        else:
            self.add_image(name, drawn, step)


@HOOKS.register_module()
class AiluRusSegVisualizationHook(SegVisualizationHook):
    """``SegVisualizationHook`` that also draws the AiluRus clusters.

    After every ``interval``-th val/test iteration it takes the assignment of
    that batch from ``model.backbone.last_assignment`` (image ``i`` of the
    batch is row ``i``) and draws each image's clusters at the network
    input's token grid, mapped back onto the original image through
    ``img_shape`` and the backbone's patch size. Batches the backbone did not
    see whole (sliding-window inference, test-time augmentation) or did not
    reduce get the stock drawing.

    Args: those of ``SegVisualizationHook``.
    """

    def _assignment(self, runner, outputs) -> Optional[ClusterAssignment]:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        bb = getattr(model, 'backbone', None)
        a = getattr(bb, 'last_assignment', None)
        if a is None:
            return None
        if a.labels.shape[0] != len(outputs):
            if not getattr(self, '_warned', False):
                warnings.warn(
                    f'AiluRusSegVisualizationHook: the last assignment holds '
                    f'{a.labels.shape[0]} images, the batch {len(outputs)} (sliding-window '
                    'inference or TTA?); drawing without clusters'
                )
                self._warned = True
            return None
        return a

    def _after_iter(
        self,
        runner,
        batch_idx: int,
        data_batch: dict,
        outputs: Sequence[SegDataSample],
        mode: str = 'val',
    ) -> None:
        if self.draw is False or mode == 'train':
            return
        if not self.every_n_inner_iters(batch_idx, self.interval):
            return
        a = self._assignment(runner, outputs)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        patch = getattr(getattr(model, 'backbone', None), 'patch_size', None)
        vis = self._visualizer
        for i, output in enumerate(outputs):
            img_path = output.img_path
            img = mmcv.imfrombytes(
                fileio.get(img_path, backend_args=self.backend_args), channel_order='rgb'
            )
            window_name = f'{mode}_{osp.basename(img_path)}'
            input_size = output.metainfo.get('img_shape') if patch else None
            if a is not None and input_size is not None:
                gh, gw = a.hw
                if input_size[0] > gh * patch or input_size[1] > gw * patch:
                    input_size = None  # not the backbone's whole input: stretch
            kw = dict(show=self.show, wait_time=self.wait_time, step=runner.iter)
            if a is not None and isinstance(vis, AiluRusSegLocalVisualizer):
                vis.add_datasample(
                    window_name,
                    img,
                    data_sample=output,
                    assignment=a,
                    index=i,
                    patch_size=patch if input_size is not None else None,
                    input_size=input_size,
                    **kw,
                )
                continue
            vis.add_datasample(window_name, img, data_sample=output, **kw)
            if a is not None:
                overlay = make_visualization(
                    img, a, i, patch if input_size is not None else None, input_size
                )
                vis.add_image(f'{window_name}_clusters', overlay, runner.iter)
