"""Fast paths (issue #6) against the fp32 reference (bf16 bounds on the golden bundle, exact
rewrites on the synthetic model), and the helpers that make them: bf16 autocast with bf16 weights,
channels_last, folded layer scales, the MSDA blend in float32, the allocator setting, prefetching
reader and background writers."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import torch

from segcli.model import msda
from segcli.model.checkpoint import load_weights
from segcli.model.config import config_from_bundle
from segcli.model.omgseg import build_model
from segcli.pipeline.config import pipeline_config_from_bundle
from segcli.pipeline.engine import Segmenter, bundle_vocabulary
from segcli.pipeline.prefetch import BackgroundWriters, prefetch

IOU_BOUND = 0.98


def make_segmenter(bundle, precision: str, channels_last: bool) -> Segmenter:
    model = build_model(config_from_bundle(bundle.config))
    load_weights(model, bundle.weights)
    model.set_class_embeddings(torch.from_numpy(bundle.outputs["cls_embed_file"]))
    return Segmenter(model, bundle_vocabulary(bundle.config), torch.device("cpu"), precision,
                     channels_last=channels_last, pipeline=pipeline_config_from_bundle(bundle.config))


@pytest.fixture(scope="module")
def reference(bundle):
    seg = make_segmenter(bundle, "fp32", channels_last=False)
    clip = torch.from_numpy(bundle.inputs["vid_batch_inputs"][0][:3])
    return clip, seg.decode_clip(seg.features(clip), 3)


def query_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-query IoU of binarised mask logits (Q, ...); queries empty in both are skipped."""
    ma, mb = (a > 0).flatten(1), (b > 0).flatten(1)
    inter, union = (ma & mb).sum(1).float(), (ma | mb).sum(1).float()
    return inter[union > 0] / union[union > 0]


def test_bf16_within_bound_of_fp32(bundle, reference):
    clip, ref = reference
    seg = make_segmenter(bundle, "bf16", channels_last=True)
    out = seg.decode_clip(seg.features(clip), 3)
    iou = query_iou(ref.mask_logits[0], out.mask_logits[0])
    assert iou.mean() >= IOU_BOUND, f"mean mask IoU {iou.mean():.4f}"
    assert iou.min() >= 0.9, f"worst query mask IoU {iou.min():.4f}"
    # class logits are ~100 x cosine: a bf16 cosine would be off by ~0.4; the fp32 classifier keeps it small
    assert (out.cls_logits - ref.cls_logits).abs().max() < 1.0
    assert torch.equal(out.cls_logits.argmax(-1), ref.cls_logits.argmax(-1))
    # logits leave in float32, except the stride-4 masks: computed in bf16, kept in bf16 (half the bytes)
    assert out.cls_logits.dtype == out.iou_logits.dtype == out.query_feat.dtype == torch.float32
    assert out.mask_logits.dtype == torch.bfloat16
    # weights are stored in bf16, the numerically sensitive parts stay fp32
    head = seg.model.panoptic_head
    assert head.transformer_decoder.layers[0].cross_attn.attn.in_proj_weight.dtype == torch.bfloat16
    assert head.transformer_decoder.post_norm.weight.dtype == torch.float32
    assert head.query_embed.weight.dtype == torch.float32
    assert seg.model.backbone.head[1].mlp.fc1.weight.dtype == torch.float32  # used outside autocast


def synthetic_clip(n: int = 3) -> torch.Tensor:
    """A normalised, padded clip for the synthetic model (its 160x96 video size)."""
    return torch.randn(n, 3, 96, 160, generator=torch.Generator().manual_seed(5))


def test_channels_last_fp32_is_the_same_computation(segmenter, monkeypatch):
    clip = synthetic_clip()
    assert segmenter.channels_last  # the CPU default
    out = segmenter.decode_clip(segmenter.features(clip), 3)
    monkeypatch.setattr(segmenter, "channels_last", False)
    ref = segmenter.decode_clip(segmenter.features(clip), 3)
    assert (ref.mask_logits > 0).any() and (ref.mask_logits < 0).any()  # masks with content to compare
    torch.testing.assert_close(out.mask_logits, ref.mask_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.cls_logits, ref.cls_logits, atol=1e-3, rtol=1e-4)


def test_folded_layer_scale_same_numbers(model_dir):
    import json
    from pathlib import Path

    model = build_model(config_from_bundle(json.loads((Path(model_dir) / "config.json").read_text())))
    load_weights(model, Path(model_dir) / "weights.safetensors")
    gammas = [b.gamma.clone() for b in model.backbone.modules() if hasattr(b, "fold_layer_scale")]
    assert gammas and all((g > 0.1).all() for g in gammas)  # real layer scales, not 1e-6
    x = synthetic_clip(2)
    ref = model.extract_features(x)
    for block in model.backbone.modules():
        if hasattr(block, "fold_layer_scale"):
            block.fold_layer_scale()
    for a, b in zip(ref, model.extract_features(x)):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_pixel_decoder_frame_by_frame_on_cpu_equals_the_batched_call(segmenter):
    """On a CPU the pixel decoder runs a clip one frame at a time (a third of the working set);
    nothing in it mixes frames, so the outputs equal one call on all frames."""
    pixel = segmenter.model.panoptic_head.pixel_decoder
    feats = segmenter.features(synthetic_clip())
    with torch.no_grad():
        mask_features, memories = pixel(feats)
        ref_features, ref_memories = pixel.forward_frames(feats)
    assert mask_features.shape[0] == 3 and (ref_features != 0).any()
    torch.testing.assert_close(mask_features, ref_features, atol=1e-5, rtol=1e-5)
    for ours, ref in zip(memories, ref_memories, strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_frames_side_by_side_is_a_view_of_channels_last_maps():
    from segcli.model.head import frames_side_by_side

    maps = torch.randn(6, 5, 3, 4, generator=torch.Generator().manual_seed(4))  # 2 clips x 3 frames
    ref = maps.view(2, 3, 5, 12).transpose(1, 2).reshape(2, 5, 36)  # pixels in (t, y, x) order
    nhwc = maps.contiguous(memory_format=torch.channels_last)
    for frames in (maps, nhwc, nhwc[3:6]):  # NCHW, channels_last, and a slice (the app's one frame)
        clips = frames.shape[0] // 3
        cols = frames_side_by_side(frames, clips)
        assert torch.equal(cols, ref[-clips:])
    cols = frames_side_by_side(nhwc, 2)
    assert cols.data_ptr() == nhwc.data_ptr()  # no copy
    embed = torch.randn(2, 7, 5)
    torch.testing.assert_close(torch.bmm(embed, cols), torch.bmm(embed, ref))


def test_head_reads_pixel_outputs_in_either_memory_format(segmenter):
    """Under autocast the backbone's maps stay channels_last and so do the pixel decoder's outputs
    (the mask features are then read in place); the head must give the same predictions for NCHW
    maps, as in float32."""
    head = segmenter.model.panoptic_head
    with torch.no_grad():
        mask_features, memories = head.pixel_decoder(segmenter.features(synthetic_clip()))
        assert mask_features.is_contiguous()  # float32: NCHW, the reference numbers' layout
        nhwc = (mask_features.contiguous(memory_format=torch.channels_last),
                [m.contiguous(memory_format=torch.channels_last) for m in memories])
        ref = head([], num_frames=3, pixel=(mask_features, memories))
        out = head([], num_frames=3, pixel=nhwc)
    assert (ref.mask_logits > 0).any() and (ref.mask_logits < 0).any()
    torch.testing.assert_close(out.mask_logits, ref.mask_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.cls_logits, ref.cls_logits, atol=1e-3, rtol=1e-4)


def test_bf16_maps_stay_channels_last(bundle):
    seg = make_segmenter(bundle, "bf16", channels_last=True)
    clip = torch.from_numpy(bundle.inputs["vid_batch_inputs"][0][:3])
    feats = seg.features(clip)
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in feats)
    mask_features, memories = seg.pixel_features(feats)
    assert mask_features.is_contiguous(memory_format=torch.channels_last)
    assert all(m.is_contiguous(memory_format=torch.channels_last) for m in memories)


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_fused_linear_activation(act, monkeypatch):
    """bf16 on CPU: bias and activation fused into the GEMM (one rounding instead of two), within
    bf16 rounding of the separate ops; float32 (the reference path) and builds without the fused
    kernel run the separate ops exactly."""
    from segcli.model import fused

    g = torch.Generator().manual_seed(3)
    linear = torch.nn.Linear(64, 256)
    x = torch.randn(2, 37, 64, generator=g)
    with torch.no_grad():
        plain = linear(x)
        plain = torch.nn.functional.gelu(plain) if act == "gelu" else plain.relu()
        torch.testing.assert_close(fused.linear_act(x, linear, act), plain, atol=0, rtol=0)  # fp32: the plain ops
        assert fused._POINTWISE is not None, "torch's oneDNN linear kernel is missing"
        calls = []
        kernel = fused._POINTWISE
        monkeypatch.setattr(fused, "_POINTWISE", lambda *a: calls.append(a[3]) or kernel(*a))
        low = torch.nn.Linear(64, 256).to(torch.bfloat16)
        low.load_state_dict({k: v.to(torch.bfloat16) for k, v in linear.state_dict().items()})
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fused.linear_act(x, low, act)
            monkeypatch.setattr(fused, "_POINTWISE", None)
            separate = fused.linear_act(x, low, act)
    assert calls == [act] and out.dtype == separate.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), plain, atol=0.05, rtol=0.02)  # bf16 weights and inputs
    # one rounding against two: within one bf16 step of the separate ops
    torch.testing.assert_close(out.float(), separate.float(), atol=2e-2, rtol=8e-3)



def test_packed_weights_same_numbers_and_never_stale():
    """A pre-packed bf16 weight gives the same numbers as the plain one, and once the weight
    changes (in place, or replaced) the layer reads the new weight, not the packed copy."""
    from segcli.model import fused

    g = torch.Generator().manual_seed(6)
    linear = torch.nn.Linear(96, 160).to(torch.bfloat16)
    x = torch.randn(3, 41, 96, generator=g).bfloat16()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = fused.linear_act(x, linear, "gelu")
        fused.pack_weight(linear)
        assert linear._packed_weight[0].is_mkldnn
        assert torch.equal(fused.linear_act(x, linear, "gelu"), plain)
        assert torch.equal(fused.linear_act(x, linear), torch.nn.functional.linear(x, linear.weight, linear.bias))
        linear.weight.mul_(2)  # in place
        doubled = torch.nn.functional.gelu(torch.nn.functional.linear(x, linear.weight, linear.bias).float())
        torch.testing.assert_close(fused.linear_act(x, linear, "gelu").float(), doubled, atol=0.05, rtol=0.02)
        fused.pack_weight(linear)
        linear.weight = torch.nn.Parameter(torch.zeros_like(linear.weight))  # replaced
        assert torch.equal(fused.linear_act(x, linear), linear.bias.expand(3, 41, 160))


def test_bf16_segmenter_packs_the_large_gemms(bundle):
    seg = make_segmenter(bundle, "bf16", channels_last=True)
    backbone_fc = seg.model.backbone.layer3.blocks[0].mlp.fc1
    pixel_ffn = seg.model.panoptic_head.pixel_decoder.encoder.layers[0].ffn.layers[1]
    decoder_ffn = seg.model.panoptic_head.transformer_decoder.layers[0].ffn.layers[1]
    assert hasattr(backbone_fc, "_packed_weight") and hasattr(pixel_ffn, "_packed_weight")
    assert not hasattr(decoder_ffn, "_packed_weight")  # 300 rows: the plain weight
    assert not hasattr(seg.model.backbone.layer4.blocks[0].mlp.fc1, "_packed_weight")  # little gain, much memory
    assert not hasattr(seg.model.backbone.head[1].mlp.fc1, "_packed_weight")  # float32 CLIP head

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_mask_as_additive_bias_is_sdpa_with_the_boolean_mask(dtype):
    """The decoder passes its boolean attention mask (True = blocked) to SDPA as 0 / -inf in the
    queries' dtype: exactly what SDPA computes with the boolean "allowed" mask, in float32 and under
    bf16 autocast, and a blocked key gets no weight."""
    import torch.nn.functional as F

    from segcli.model.transformer_decoder import Attention

    g = torch.Generator().manual_seed(3)
    attn = Attention(32, 4).eval()
    query, pos = torch.randn(2, 5, 32, generator=g), torch.randn(2, 5, 32, generator=g)
    key, key_pos = torch.randn(2, 40, 32, generator=g), torch.randn(2, 40, 32, generator=g)
    blocked = torch.rand(2, 5, 40, generator=g) < 0.6
    blocked[:, :, 0] = False  # every query may attend somewhere
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        ours = attn(query, key, key, pos, key_pos, blocked)
        mha = attn.attn
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
        b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
        q = F.linear(query + pos, w_q, b_q).view(2, 5, 4, 8).transpose(1, 2)
        k = F.linear(key + key_pos, w_k, b_k).view(2, 40, 4, 8).transpose(1, 2)
        v = F.linear(key, w_v, b_v).view(2, 40, 4, 8).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=~blocked[:, None])
        reference = query + mha.out_proj(out.transpose(1, 2).reshape(2, 5, 32))
        # the values of the keys blocked for query 0 changed: its output must not move
        value = key.clone()
        batch, keys = blocked[:, 0].nonzero(as_tuple=True)
        value[batch, keys] += 100
        moved = attn(query, key, value, pos, key_pos, blocked)
    assert torch.equal(ours, reference)
    assert torch.equal(moved[:, 0], ours[:, 0]), "query 0 read a value it was blocked from"
    assert not torch.equal(moved[:, 1:], ours[:, 1:])  # the others do read some of them


def test_msda_chunked_gathers_match_one_chunk(monkeypatch):
    g = torch.Generator().manual_seed(2)
    shapes = [(5, 7), (3, 4)]
    b, m, d, nq, p = 2, 3, 4, 9, 2
    value = torch.randn(b, sum(h * w for h, w in shapes), m, d, generator=g)
    loc = torch.rand(b, nq, m, len(shapes), p, 2, generator=g) * 1.6 - 0.3
    wts = torch.rand(b, nq, m, len(shapes), p, generator=g)
    whole = msda.ms_deform_attn(value, shapes, loc, wts)
    for chunk_bytes in (1, 4 * m * p * 4 * 4):  # one query per chunk; 4 queries (uneven: 9 = 4 + 4 + 1)
        monkeypatch.setattr(msda, "GATHER_CHUNK_BYTES", chunk_bytes)
        torch.testing.assert_close(msda.ms_deform_attn(value, shapes, loc, wts), whole, atol=0, rtol=0)


def test_msda_bf16_values_are_blended_in_float32():
    """Under autocast the value projection is bf16; the gathers and the blend are float32, so
    the result is the float32 blend of the (rounded) bf16 values."""
    g = torch.Generator().manual_seed(1)
    shapes = [(5, 7), (3, 4)]
    b, m, d, nq, p = 2, 3, 4, 9, 2
    value = torch.randn(b, sum(h * w for h, w in shapes), m, d, generator=g).bfloat16()
    loc = torch.rand(b, nq, m, len(shapes), p, 2, generator=g) * 1.6 - 0.3
    wts = torch.rand(b, nq, m, len(shapes), p, generator=g)
    out = msda.ms_deform_attn(value, shapes, loc, wts)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, msda.ms_deform_attn(value.float(), shapes, loc, wts), atol=0, rtol=0)


def test_softmax_fp32_matches_torch():
    x = torch.randn(5, 7, 12, dtype=torch.bfloat16)
    torch.testing.assert_close(msda.softmax_fp32(x), x.float().softmax(-1), atol=1e-6, rtol=1e-6)


def test_prefetch_keeps_order_and_bounds_the_queue(monkeypatch):
    """The worker reads at most `depth` queued items + the one it holds ahead of the consumer, and
    does read that far. Synchronised on the worker's own puts (no sleeps): after taking item k the
    test waits until the worker blocks on the full queue, holding item k + depth + 1."""
    from segcli.pipeline import prefetch as prefetch_module

    depth, total = 3, 20
    produced = []
    blocked = []  # items the worker held while the queue was full
    done = []
    changed = threading.Condition()
    put = prefetch_module._put

    def spy(q, item, stop):
        with changed:
            if item is prefetch_module._DONE:
                done.append(True)
            elif q.full():
                blocked.append(item)
            changed.notify_all()
        return put(q, item, stop)

    monkeypatch.setattr(prefetch_module, "_put", spy)

    def source():
        for i in range(total):
            produced.append(i)
            yield i

    it = prefetch(source(), depth=depth)
    try:
        for k in range(total):
            assert next(it) == k
            ahead = k + depth + 1
            with changed:
                if ahead < total:
                    assert changed.wait_for(lambda: done or (blocked and blocked[-1] >= ahead), timeout=10)
                    # blocked holding item `ahead`: items k+1..k+depth are queued, nothing more was read
                    assert len(produced) == ahead + 1, (k, len(produced))
                else:  # the source ends within reach: the worker reads it all and hands over the end
                    assert changed.wait_for(lambda: done, timeout=10)
                    assert len(produced) == total
        with pytest.raises(StopIteration):
            next(it)
    finally:
        it.close()


def test_prefetch_reraises_and_stops_early():
    def broken():
        yield 1
        raise ValueError("bad frame")

    it = prefetch(broken(), depth=2)
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad frame"):
        next(it)

    produced = []

    def endless():
        for i in range(10**6):
            produced.append(i)
            yield i

    before = set(threading.enumerate())
    it = prefetch(endless(), depth=2)
    next(it)
    workers = [t for t in set(threading.enumerate()) - before if t.name == "segcli-prefetch"]
    assert len(workers) == 1
    it.close()  # the worker thread ends instead of decoding the rest (close joins it)
    assert not any(t.is_alive() for t in workers)
    assert len(produced) <= 1 + 2 + 1


class ListWriter:
    needs_image = False

    def __init__(self, fail_at=None):
        self.items, self.closed, self.aborted, self.fail_at = [], False, False, fail_at

    def write(self, frame):
        if frame == self.fail_at:
            raise OSError("disk full")
        self.items.append(frame)

    def close(self):
        self.closed = True

    def abort(self):
        self.aborted = True


class SpyWriters(BackgroundWriters):
    """Sets `failed` once the worker has recorded a writer's error (no sleeps in the tests)."""

    def __init__(self, *args, **kwargs):
        self.failed = threading.Event()
        super().__init__(*args, **kwargs)

    @property
    def _error(self):
        return self.__dict__.get("_spy_error")

    @_error.setter
    def _error(self, exc):
        self.__dict__["_spy_error"] = exc
        if exc is not None:
            self.failed.set()


def test_background_writers_write_in_order_and_close():
    a, b = ListWriter(), ListWriter()
    with BackgroundWriters([a, b], depth=2) as out:
        for i in range(30):
            out.write(i)
    assert a.items == b.items == list(range(30))
    assert a.closed and b.closed and not a.aborted


def test_background_writers_raise_the_writer_error():
    # raised by the next write once the worker met it; the writers are aborted, not closed
    w = ListWriter(fail_at=3)
    out = SpyWriters([w], depth=2)
    for i in range(4):
        out.write(i)
    assert out.failed.wait(10)
    with pytest.raises(OSError, match="disk full"):
        out.write(4)
    assert w.aborted and not w.closed
    assert w.items == [0, 1, 2]
    # or by close(), which waits for the queue
    w = ListWriter(fail_at=3)
    out = BackgroundWriters([w], depth=8)
    for i in range(6):
        out.write(i)
    with pytest.raises(OSError, match="disk full"):
        out.close()
    assert w.aborted and not w.closed
    assert w.items == [0, 1, 2]  # nothing after the failure


def test_keep_freed_memory_serves_large_tensors_from_the_heap():
    """After the setting, a 256 MB tensor comes from the heap (reusable once freed), not from a
    fresh mmap that the kernel would page-fault in again next time."""
    import ctypes
    import platform

    from segcli.runtime import keep_freed_memory

    if not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"):
        pytest.skip("glibc only")
    assert keep_freed_memory()
    libc = ctypes.CDLL("libc.so.6")

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                         "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc.mallinfo2.restype = MallInfo2
    before = libc.mallinfo2()
    big = torch.ones(64, 2**20)  # 256 MB
    during = libc.mallinfo2()
    assert during.hblkhd - before.hblkhd < 64 * 2**20  # not mmapped
    assert during.uordblks - before.uordblks > 240 * 2**20  # from the heap (other blocks come and go)
    del big
    after = libc.mallinfo2()
    assert after.arena >= during.arena  # kept by the process (no trim), ready for reuse


def test_release_freed_memory_gives_kept_pages_back():
    """Once per clip the session hands the heap's free pages back: a freed 256 MB tensor stays
    resident under keep_freed_memory until release_freed_memory, then leaves the RSS."""
    import os
    import platform

    from segcli.runtime import keep_freed_memory, release_freed_memory

    if not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"):
        pytest.skip("glibc only")

    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    assert keep_freed_memory()
    big = torch.ones(64, 2**20)  # 256 MB, touched
    del big
    kept = rss_mb()
    release_freed_memory()
    assert kept - rss_mb() > 200, "the freed tensor's pages are still resident"


EXIT_SCRIPT = """
import atexit, sys, threading
from segcli.runtime import exit_now

class Module:
    def __del__(self):
        print("torn down")

kept = Module()  # freed by the interpreter's teardown, which exit_now skips
atexit.register(lambda: print("atexit ran"))
release = threading.Event()
threading.Thread(target=lambda: (release.wait(), print("thread finished"))).start()
print("buffered", end=" ")
threading.Timer(0.05, release.set).start()  # the thread is still running when the exit starts
{end}
"""


@pytest.mark.parametrize("end", ["exit_now(3)", "sys.exit(3)"])
def test_exit_now_is_a_normal_exit_without_the_teardown(end):
    """The entry points end with exit_now: the same status, atexit handlers and flushed output as
    sys.exit, a running non-daemon thread waited for; only the interpreter's teardown (which
    sys.exit shows here) is skipped."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", EXIT_SCRIPT.format(end=end)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    expected = "buffered thread finished\natexit ran\n" + ("torn down\n" if end.startswith("sys") else "")
    assert proc.stdout == expected


def test_exit_now_ends_an_executor_left_running():
    """A ThreadPoolExecutor that was never shut down has idle non-daemon workers: a normal exit
    tells them to end before waiting for them, and so must exit_now (or it would wait forever)."""
    import subprocess

    script = ("from concurrent.futures import ThreadPoolExecutor\nfrom segcli.runtime import exit_now\n"
              "pool = ThreadPoolExecutor(2)\nprint(pool.submit(sum, [1, 2]).result(), end='')\nexit_now(5)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert (proc.returncode, proc.stdout) == (5, "3")


@pytest.mark.xdist_group("golden_runs")  # one worker computes the shared runs (tests/conftest.py)
@pytest.mark.parametrize("task", ["vis", "vps"])
def test_bf16_task_results_within_bound_on_the_golden_video(bundle, golden_runs, task):
    """The default CPU precision against fp32 on the bundle's video, at the level users see:
    every fp32 object (frame, id) is reported by bf16 too, with mask IoU >= 0.98 on average."""
    from segcli.pipeline.video import VideoOptions, segment_video

    options = golden_runs.EXACT_VIS if task == "vis" else golden_runs.EXACT_VPS
    ref = {(r.index, s.id): s.mask for r in golden_runs.get(**options) for s in r.segments}  # fp32, shared
    emb = torch.from_numpy(bundle.outputs["cls_embed_file"])
    seg = Segmenter.load(str(bundle.path), device="cpu", precision="bf16", embeddings=emb)
    low = {(r.index, s.id): s.mask for r in segment_video(seg, bundle.frames(), VideoOptions(**options))
           for s in r.segments}
    assert ref and set(ref) == set(low)
    ious = [np.logical_and(ref[k], low[k]).sum() / np.logical_or(ref[k], low[k]).sum() for k in ref]
    assert np.mean(ious) >= IOU_BOUND, f"mean object IoU {np.mean(ious):.4f}"
