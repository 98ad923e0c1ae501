import sys, time, torch, numpy as np
torch.set_num_threads(1); torch.manual_seed(0)
from mmengine.config import Config
from mmengine.registry import init_default_scope
import ailurus_mm
from ailurus_mm.zoo.coco import REFERENCE_CONFIG, backbone_state
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_overlaps, bbox2roi
cfg = Config.fromfile(str(REFERENCE_CONFIG)); init_default_scope('mmdet')
model = MODELS.build(cfg.model); model.init_weights()
model.load_state_dict(backbone_state(), strict=False)
heads = torch.load('/work/cache/heads_agnostic.pth', weights_only=True)
model.load_state_dict({k: v.float() for k, v in heads.items()}, strict=False)
model.eval()
items, val_items = torch.load('/work/cache/coco_agnostic_maps.pt', weights_only=False)
def feats_of(its, n):
    X=[]; Y=[]; Xr=[]
    for item in its[:n]:
        gt = item['data_samples'][0].gt_instances.bboxes
        if len(gt)==0: continue
        H, W = item['data_samples'][0].img_shape
        # negatives: random boxes with IoU < 0.3 to every gt
        cand = torch.rand(200, 4) * torch.tensor([W, H, W, H])
        cand = torch.stack([cand[:, [0, 2]].min(1).values, cand[:, [1, 3]].min(1).values, cand[:, [0, 2]].max(1).values, cand[:, [1, 3]].max(1).values], 1)
        cand = cand[((cand[:, 2]-cand[:, 0]) > 16) & ((cand[:, 3]-cand[:, 1]) > 16)]
        neg = cand[bbox_overlaps(cand, gt).max(1).values < 0.3][:len(gt) * 3]
        boxes = torch.cat([gt, neg]); y = torch.cat([torch.ones(len(gt)), torch.zeros(len(neg))])
        with torch.no_grad():
            feats = model.neck(model.backbone.adapt(item['maps'], 1))
            rf = model.roi_head.bbox_roi_extractor(feats[:4], bbox2roi([boxes]))
            # raw stride-16 block-12 map, RoIAlign 7x7
            from mmcv.ops import roi_align
            raw = roi_align(item['maps'][3], bbox2roi([boxes]), (7, 7), 1/16., 0, 'avg', True)
        X.append(rf.flatten(1)); Xr.append(raw.mean((2, 3))); Y.append(y)
    return torch.cat(X), torch.cat(Xr), torch.cat(Y)
Xt, Xrt, Yt = feats_of(items[0], 120)
Xv, Xrv, Yv = feats_of(val_items, 80)
print('train', Xt.shape, Yt.mean().item(), 'val', Xv.shape)
def probe(Xt, Yt, Xv, Yv, name):
    mu, sd = Xt.mean(0), Xt.std(0) + 1e-5
    Xt, Xv = (Xt-mu)/sd, (Xv-mu)/sd
    w = torch.zeros(Xt.shape[1], requires_grad=True); b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)
    def clo():
        opt.zero_grad(); l = torch.nn.functional.binary_cross_entropy_with_logits(Xt@w+b, Yt) + 1e-3*w.square().sum(); l.backward(); return l
    opt.step(clo)
    print(name, 'train AP', ap(Yt.numpy(), (Xt@w+b).detach().numpy()), 'val AP', ap(Yv.numpy(), (Xv@w+b).detach().numpy()))
def ap(y, s):
    o = np.argsort(-s); y = y[o]; tp = np.cumsum(y); prec = tp / np.arange(1, len(y)+1); return float((prec*y).sum()/y.sum())
probe(Xrt, Yt, Xrv, Yv, 'raw block-12 RoI mean (384-d)')
probe(Xt, Yt, Xv, Yv, 'trained FPN RoI 7x7x128')
with torch.no_grad():
    s = model.roi_head.bbox_head(Xv.view(-1, 128, 7, 7))[0].softmax(-1)[:, 0].numpy()
print('current bbox_head val AP on these RoIs', ap(Yv.numpy(), s))
