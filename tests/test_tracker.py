"""segcli.pipeline.tracker: MinVIS matching and chained association vs the golden bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segcli.pipeline.tracker import ClipAssociator, cost_matrix, match_from_embeds, reorder


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _num_clips(bundle) -> int:
    return len(bundle.outputs["vid_clip_frame_ranges"])


def _clip(bundle, c):
    o = bundle.outputs
    return (
        _t(o[f"vid_clip{c}_pred_cls"]),
        _t(o[f"vid_clip{c}_pred_iou"]),
        _t(o[f"vid_clip{c}_query_feat"]),
        _t(o[f"vid_clip{c}_mask_logits"]),
    )


def test_golden_synthetic_match(bundle):
    perm = match_from_embeds(
        _t(bundle.inputs["assoc_syn_tgt_embeds"]), _t(bundle.inputs["assoc_syn_cur_embeds"])
    )
    assert perm.dtype == torch.int64
    assert np.array_equal(perm.numpy(), bundle.outputs["assoc_syn_indices"])


def test_golden_match_perms_and_costs(bundle):
    o = bundle.outputs
    reference = _t(o["vid_clip0_query_feat"])
    for c in range(1, _num_clips(bundle)):
        cur = _t(o[f"vid_clip{c}_query_feat"])
        cost = cost_matrix(reference, cur)
        np.testing.assert_allclose(cost.numpy(), o[f"vid_match_cost{c}"], atol=1e-6, rtol=0)  # observed 0.0
        perm = match_from_embeds(reference, cur)
        assert np.array_equal(perm.numpy(), o[f"vid_match_perm{c}"])
        reference = cur[perm]  # chained: the re-ordered clip is the next reference


def test_golden_merged_logits_and_masks(bundle):
    o = bundle.outputs
    assoc = ClipAssociator()
    masks = []
    for c in range(_num_clips(bundle)):
        out = assoc.add(*_clip(bundle, c))
        if c > 0:
            assert np.array_equal(out.perm.numpy(), o[f"vid_match_perm{c}"])
        masks.append(out.per_query)
    assert assoc.num_clips == _num_clips(bundle)
    np.testing.assert_allclose(assoc.mean_cls().numpy(), o["vid_merged_cls"], atol=5e-3, rtol=0)
    np.testing.assert_allclose(assoc.mean_iou().numpy(), o["vid_merged_iou"], atol=1e-5, rtol=0)
    merged = torch.cat(masks, dim=1)
    np.testing.assert_allclose(merged.numpy(), o["vid_merged_mask_logits_q4_derived"], atol=1e-4, rtol=0)


def test_golden_injected_permutation_is_undone(bundle):
    o, i = bundle.outputs, bundle.inputs
    assoc = ClipAssociator()
    masks = []
    for c in range(_num_clips(bundle)):
        cls, iou, feat, mask = _clip(bundle, c)
        if c > 0:
            injected = _t(i[f"vidperm_injected_perm{c}"])
            cls, iou, feat, mask = cls[injected], iou[injected], feat[injected], mask[injected]
        out = assoc.add(cls, iou, feat, {"masks": mask})
        if c > 0:
            assert np.array_equal(out.perm.numpy(), o[f"vidperm_match_perm{c}"])
            assert torch.equal(injected[out.perm], torch.arange(len(injected)))  # the inverse
        masks.append(out.per_query["masks"])
    np.testing.assert_allclose(assoc.mean_cls().numpy(), o["vidperm_merged_cls"], atol=5e-3, rtol=0)
    np.testing.assert_allclose(assoc.mean_cls().numpy(), o["vid_merged_cls"], atol=5e-3, rtol=0)
    np.testing.assert_allclose(assoc.mean_iou().numpy(), o["vidperm_merged_iou"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(
        torch.cat(masks, 1).numpy(), o["vid_merged_mask_logits_q4_derived"], atol=1e-4, rtol=0
    )


def test_chained_reference_and_means_synthetic():
    gen = torch.Generator().manual_seed(0)
    q, e, c = 12, 16, 5
    base = torch.randn(q, e, generator=gen)
    cls0 = torch.randn(q, c, generator=gen)
    assoc = ClipAssociator()
    assoc.add(cls0, torch.zeros(q, 1), base)
    drift = base.clone()
    expected_sum = cls0.clone()
    for step in range(1, 5):
        drift = drift + 0.05 * torch.randn(q, e, generator=gen)  # slow drift: only neighbours match
        hidden = torch.randperm(q, generator=gen)
        cls = cls0 + step
        out = assoc.add(cls[hidden], torch.full((q, 1), float(step))[hidden], drift[hidden], [drift[hidden]])
        assert torch.equal(hidden[out.perm], torch.arange(q))
        assert torch.equal(out.per_query[0], drift)
        expected_sum = expected_sum + cls
    torch.testing.assert_close(assoc.mean_cls(), expected_sum / 5)
    torch.testing.assert_close(assoc.mean_iou(), torch.full((q, 1), 2.0))


def test_errors_and_reorder():
    assoc = ClipAssociator()
    with pytest.raises(RuntimeError):
        assoc.mean_cls()
    with pytest.raises(ValueError):
        assoc.add(torch.zeros(3, 2), torch.zeros(4, 1), torch.ones(3, 4))
    perm = torch.tensor([2, 0, 1])
    x = torch.arange(3)
    assert reorder(None, perm) is None
    assert torch.equal(reorder((x, {"a": x}), perm)[1]["a"], torch.tensor([2, 0, 1]))
    with pytest.raises(TypeError):
        reorder("masks", perm)
