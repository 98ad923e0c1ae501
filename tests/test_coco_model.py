"""The trained frozen-DINOv2-S/14 Mask R-CNN (COCO person): checkpoint, configs, AP.

Assembles the full checkpoint (the converted ViT + the shipped adapters,
neck and heads ``checkpoints/mask-rcnn_dinov2-s14_coco-tiny-person_heads.pth``)
with ``ailurus_mm.zoo.coco.assemble``, loads it strictly into the models of the
reference and the AiluRus configs, reproduces the AiluRus-off box and mask AP
that docs/results.md states on all 80 COCO_Tiny val2017 images, checks that
the detection sweep's prefix-cached evaluation gives ``model.test_step``'s
predictions, and runs the trainer end to end on a few images. Without PyPI
(the ViT conversion) or the COCO data the tests are skipped, except in CI,
where they fail.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
COCO_TINY = (REPO / '..' / 'shared' / 'data' / 'COCO_Tiny').resolve()
# docs/results.md, "Detection on real images": AiluRus off, all 80 val images
# (CocoMetric rounds to 0.1 AP).
REF_BBOX_AP = None
REF_SEGM_AP = None

pytestmark = pytest.mark.usefixtures('mmdet_scope')


@pytest.fixture(scope='module')
def data(skip_or_fail) -> Path:
    if not (COCO_TINY / 'val2017').is_dir():
        skip_or_fail(f'COCO_Tiny not found at {COCO_TINY}')
    return COCO_TINY


def _model(config: Path, checkpoint: Path, **backbone):
    from mmengine.config import Config
    from mmengine.registry import MODELS

    import ailurus_mm  # noqa: F401
    from ailurus_mm.analysis import quiet_logs

    cfg = Config.fromfile(str(config))
    cfg.model.backbone.update(backbone)
    model = MODELS.build(cfg.model)
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)['state_dict']
    with quiet_logs():
        model.load_state_dict(state, strict=True)
    return cfg, model.eval()


@pytest.fixture(scope='module')
def reference(coco_checkpoint, data):
    from ailurus_mm.zoo.coco import REFERENCE_CONFIG

    return _model(REFERENCE_CONFIG, coco_checkpoint)


def test_heads_artefact_is_plain_tensors():
    from ailurus_mm.zoo.coco import DEFAULT_HEADS, HEAD_PREFIXES, load_heads

    heads = load_heads(DEFAULT_HEADS)
    assert all(any(k.startswith(p) for k in heads) for p in HEAD_PREFIXES)
    assert not any(k.startswith('backbone.blocks') for k in heads)
    assert DEFAULT_HEADS.stat().st_size < 100 * 2**20


def test_load_heads_rejects_bad_files(tmp_path):
    from ailurus_mm.zoo.coco import load_heads

    with pytest.raises(FileNotFoundError, match='train_heads_cached.py'):
        load_heads(tmp_path / 'missing.pth')
    torch.save({'backbone.blocks.0.norm1.weight': torch.ones(2)}, tmp_path / 'vit.pth')
    with pytest.raises(ValueError, match=r"offending keys: \['backbone.blocks.0.norm1.weight'\]"):
        load_heads(tmp_path / 'vit.pth')
    torch.save([torch.ones(1)], tmp_path / 'list.pth')
    with pytest.raises(ValueError, match='expected a dict of tensors, got list'):
        load_heads(tmp_path / 'list.pth')


def test_checkpoint_loads_strictly_into_the_ailurus_config(coco_checkpoint):
    from ailurus_mm.zoo.coco import AILURUS_CONFIG

    cfg, model = _model(AILURUS_CONFIG, coco_checkpoint)
    assert model.backbone.options.enabled and model.backbone.frozen
    assert cfg.model.roi_head.bbox_head.num_classes == 1


def test_reference_reproduces_the_documented_ap(reference):
    from ailurus_mm.analysis.detection import build_det_metric, evaluate_det
    from ailurus_mm.analysis.segmentation import load_test_batches

    cfg, model = reference
    batches, meta = load_test_batches(cfg, progress=False)
    assert len(batches) == 80
    res = evaluate_det(model, batches, build_det_metric(cfg, meta))
    assert res['bbox_mAP'] == pytest.approx(REF_BBOX_AP, abs=0.051)
    assert res['segm_mAP'] == pytest.approx(REF_SEGM_AP, abs=0.051)


@pytest.mark.parametrize(
    'options',
    [
        dict(cluster_after=4, keep_ratio=0.5),
        dict(cluster_after=4, keep_ratio=0.5, method='random', reconstruct='soft_residual'),
        dict(cluster_after=0, keep_ratio=0.3, method='tome_layers'),
    ],
)
def test_prefix_cached_evaluation_is_test_step(reference, options):
    """The sweep's numbers are ``model.test_step``'s: same boxes, scores, masks."""
    from ailurus_mm.analysis.detection import det_features, features_override
    from ailurus_mm.analysis.segmentation import PrefixCache, load_test_batches

    cfg, model = reference
    batches, _ = load_test_batches(cfg, 2, every=7, progress=False)
    cache = PrefixCache(model, batches)
    bb = model.backbone
    with bb.options_override(enabled=True, **options) as opts, torch.no_grad():
        for j, (data, pre) in enumerate(zip(batches, cache.inputs)):
            ref = model.test_step(data)[0].pred_instances
            feats = det_features(model, pre['inputs'], opts, cache.state(j, opts))
            with features_override(model, feats):
                out = model.predict(pre['inputs'], pre['data_samples'])[0].pred_instances
            assert len(ref) > 0
            for key in ('bboxes', 'scores', 'labels', 'masks'):
                assert torch.equal(ref[key], out[key]), key
    assert 'extract_feat' not in vars(model)  # the override is undone


def test_trainer_end_to_end_on_a_few_images(coco_checkpoint, data, tmp_path):
    """tools/coco/train_heads_cached.py: caches, trains, validates, writes parts
    that assemble into a checkpoint the config loads strictly."""
    from ailurus_mm.zoo.coco import HEAD_PREFIXES, REFERENCE_CONFIG, assemble, load_heads

    out = tmp_path / 'heads.pth'
    cmd = [
        sys.executable,
        str(REPO / 'tools' / 'coco' / 'train_heads_cached.py'),
        '--epochs', '1',
        '--val-images', '2',
        '--log-interval', '1',
        '--threads', '2',
        '--out', str(out),
        '--cfg-options',
        'train_dataloader.dataset.datasets.0.indices=2',
        'train_dataloader.dataset.datasets.1.indices=1',
    ]  # fmt: skip
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'training 1 epochs x 3 images' in run.stdout
    assert 'ep 1 val bbox_mAP' in run.stdout and 'it 3 ' in run.stdout
    heads = load_heads(out)
    assert {k.split('.')[0] for k in heads} == {p.split('.')[0] for p in HEAD_PREFIXES}
    full = assemble(out, tmp_path / 'full.pth')
    _model(REFERENCE_CONFIG, full)
