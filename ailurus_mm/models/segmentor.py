"""Logits-level reconstruction for mmseg: the decode head runs on merged tokens.

With ``ailurus.reconstruct_level='logits'`` the backbone leaves its last
output as the M merged tokens; :class:`AiluRusEncoderDecoder` runs the decode
head on them (as a ``[B, C, 1, M]`` map) and reconstructs the head's logits to
the token grid with the same rule the features would have used (``hard``:
every token copies its cluster's logits; ``soft``: the windowed weighted sum),
then resizes them as mmseg does. This is Expedite's / CTS's / ALGM's choice;
it also saves the head's cost, which matters for Segmenter's mask
transformer. Every other setting is mmseg's ``EncoderDecoder`` unchanged.
"""

from __future__ import annotations

from typing import List

from mmseg.models.decode_heads import FCNHead, SegmenterMaskTransformerHead
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from torch import Tensor

from .reduction import AiluRusBackboneMixin

__all__ = ['AiluRusEncoderDecoder']


@MODELS.register_module()
class AiluRusEncoderDecoder(EncoderDecoder):
    """mmseg's ``EncoderDecoder`` with logits-level reconstruction.

    Takes ``EncoderDecoder``'s arguments (so its configs and checkpoints work
    unchanged). Logits-level reconstruction needs an AiluRus backbone with one
    output, no neck and a decode head that treats tokens independently of
    their grid position: a 1x1-conv ``FCNHead`` (``num_convs=0``,
    Segmenter-Linear) or ``SegmenterMaskTransformerHead``. Inference only:
    training runs the backbone's forward, which rejects merged outputs.

    Raises:
        ValueError: at build, when the backbone's options ask for
            ``reconstruct_level='logits'`` and the model cannot do it.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if isinstance(self.backbone, AiluRusBackboneMixin):
            self.check_logits_level()

    def check_logits_level(self) -> None:
        """Raise if the current options ask for logits-level reconstruction
        that this model cannot run."""
        bb = self.backbone
        if not isinstance(bb, AiluRusBackboneMixin) or bb.options.reconstruct_level != 'logits':
            return
        head = self.decode_head
        per_token = isinstance(head, SegmenterMaskTransformerHead) or (
            type(head) is FCNHead and head.num_convs == 0 and not head.concat_input
        )
        problems = []
        if not per_token:
            problems.append(
                f'decode_head {type(head).__name__} mixes neighbouring tokens (allowed: FCNHead '
                'with num_convs=0, SegmenterMaskTransformerHead)'
            )
        if self.with_neck:
            problems.append(f'a neck ({type(self.neck).__name__})')
        if len(bb.reduction_out_indices) != 1:
            problems.append(f'{len(bb.reduction_out_indices)} backbone outputs (needs 1)')
        if problems:
            raise ValueError(
                "ailurus.reconstruct_level='logits' cannot run here: "
                + '; '.join(problems)
                + ". Use reconstruct_level='features'"
            )

    def encode_decode(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """``EncoderDecoder.encode_decode``; at the logits level the head runs
        on the merged tokens and its logits are reconstructed to the grid."""
        bb = self.backbone
        opts = getattr(bb, 'options', None)
        if (
            opts is None
            or opts.reconstruct_level != 'logits'
            or not opts.reduces(bb.token_grid(inputs.shape[-2:]))
        ):
            return super().encode_decode(inputs, batch_img_metas)
        self.check_logits_level()
        res = bb.forward_tokens(inputs)
        bb.last_assignment = res.assignment
        return self.decode_tokens(res, batch_img_metas)

    def decode_tokens(self, res, batch_img_metas: List[dict]) -> Tensor:
        """Seg logits at the input size from a backbone's
        :class:`~ailurus_mm.ops.ReductionOutput` whose last output is merged:
        the head on the M tokens, its logits reconstructed, then resized."""
        logits = self.decode_head.forward(self.backbone.format_outputs(res))  # [B, K, 1, M]
        b, k = logits.shape[:2]
        h, w = res.hw
        full = res.unfold(logits.flatten(2).transpose(1, 2))  # [B, N, K]
        full = full.transpose(1, 2).reshape(b, k, h, w)
        # the rest of BaseDecodeHead.predict (resize to the input, as mmseg 1.2.2)
        return self.decode_head.predict_by_feat(full, batch_img_metas)
