import sys, time, torch
sys.argv=['x']
torch.set_num_threads(1)
from mmengine.config import Config
from mmengine.registry import init_default_scope
import ailurus_mm
from ailurus_mm.zoo.coco import REFERENCE_CONFIG, backbone_state
from ailurus_mm.analysis.detection import features_override
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_overlaps
cfg = Config.fromfile(str(REFERENCE_CONFIG)); init_default_scope('mmdet')
model = MODELS.build(cfg.model); model.init_weights()
model.load_state_dict(backbone_state(), strict=False)
heads = torch.load('/work/cache/heads_agnostic.pth', weights_only=True)
print(model.load_state_dict({k: v.float() for k, v in heads.items()}, strict=False).unexpected_keys)
model.eval()
t=time.time(); items, val_items = torch.load('/work/cache/coco_agnostic_maps.pt', weights_only=False); print('load', time.time()-t)
def diag(its, name):
    rec_rpn=[]; rec_det=[]; gt_scores=[]
    for item in its:
        ds = item['data_samples'][0]
        gt = ds.gt_instances.bboxes
        if len(gt)==0: continue
        with torch.no_grad():
            feats = model.neck(model.backbone.adapt(item['maps'], 1))
            props = model.rpn_head.predict(feats, item['data_samples'], rescale=False)[0]
            iou = bbox_overlaps(gt, props.bboxes[:100])
            rec_rpn.append((iou.max(1).values > 0.5).float().mean().item())
            with features_override(model, feats):
                out = model.predict(item['inputs'], item['data_samples'], rescale=False)[0]
            b = out.pred_instances.bboxes
            if len(b): rec_det.append((bbox_overlaps(gt, b).max(1).values > 0.5).float().mean().item())
            else: rec_det.append(0.0)
            # RCNN scores of the GT boxes themselves
            from mmengine.structures import InstanceData
            r = InstanceData(bboxes=gt.clone())
            from mmdet.structures.bbox import bbox2roi
            rois = bbox2roi([gt])
            res = model.roi_head._bbox_forward(feats, rois)
            gt_scores.append(res['cls_score'].softmax(-1)[:, 0].mean().item())
            n_det = len(b)
    import numpy as np
    print(name, 'rpn recall@100 IoU.5', np.mean(rec_rpn), 'det recall', np.mean(rec_det), 'mean obj score of GT boxes', np.mean(gt_scores), 'last n_det', n_det)
diag(val_items[:30], 'val')
diag(items[0][:30], 'train')
