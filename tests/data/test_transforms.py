"""The §2 pipeline: parameter ranges, exact special cases, and per-image vs batched agreement."""

import math

import pytest
import torch

from bagoftricks.seeds import derive_seed
from bagoftricks.data.transforms import (EIGVAL, EIGVEC, IMAGENET_MEAN, IMAGENET_STD, RGB2YIQ, BatchAugment,
                                         EvalTransform, color_matrix, normalize, paper_train_transform,
                                         reference_apply, sample_params)


def make_image(H=40, W=40):
    """Asymmetric (left/right differ, so flips show), colourful (so hue/saturation show)."""
    yy, xx = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    r = torch.where(xx < W / 2, 200 - 2 * yy, 60 + yy)
    g = torch.where(xx < W / 2, 50 + 3 * xx, 180 - xx)
    b = 40 + 4 * yy * (xx / W)
    return torch.stack([r, g, b]).clamp(0, 255).round().to(torch.uint8)


def neutral(B, H, W):
    z = torch.zeros(B, dtype=torch.long)
    return {"crop": torch.stack([z, z, z + H, z + W], 1), "flip": torch.zeros(B, dtype=torch.bool),
            "brightness": torch.ones(B), "saturation": torch.ones(B), "hue": torch.ones(B), "alpha": torch.zeros(B, 3)}


# ---------------------------------------------------------------------------------------------- params


@pytest.mark.parametrize("H,W", [(32, 32), (24, 60)])
def test_paper_param_ranges(H, W):
    B = 20000
    p = sample_params(B, H, W, torch.Generator().manual_seed(0))
    top, left, h, w = p["crop"].T.double()
    area = h * w / (H * W)
    assert area.min() >= 0.08 and area.max() <= 1.0
    assert (w / h).min() >= 3 / 4 - 1e-12 and (w / h).max() <= 4 / 3 + 1e-12
    assert top.min() >= 0 and left.min() >= 0 and (top + h).max() <= H and (left + w).max() <= W
    # Positions are spread over the whole image, not stuck at a corner.
    assert (top + h).max() == H and left.min() == 0 and (left + w).max() == W
    # Small and large crops both occur (the largest box with aspect <= 4/3 in 24x60 is 24x32).
    largest = min(W, round(H * 4 / 3)) * min(H, round(W * 4 / 3)) / (H * W)
    assert area.min() < 0.1 and area.max() > 0.95 * largest
    if H == W:  # aspect log-uniform: on a square, log(w/h) is symmetric (uniform would favour wide boxes)
        logr = torch.log(w / h)
        assert abs(logr.mean().item()) < 0.01 and abs((w > h).double().mean() - (w < h).double().mean()) < 0.02
    # Position uniform: crop centres average to the image centre.
    assert abs(((top + h / 2) / H).mean().item() - 0.5) < 0.01 and abs(((left + w / 2) / W).mean().item() - 0.5) < 0.01
    assert abs(p["flip"].float().mean().item() - 0.5) < 0.015
    for k in ("brightness", "saturation", "hue"):
        f = p[k]
        assert f.min() >= 0.6 and f.max() <= 1.4
        assert abs(f.mean().item() - 1) < 0.01 and abs(f.std().item() - 0.8 / math.sqrt(12)) < 0.005
    a = p["alpha"]
    assert a.shape == (B, 3) and a.mean().abs().item() < 0.003 and abs(a.std().item() - 0.1) < 0.002


def test_fallback_is_a_centre_crop():
    # 10x100: no box with aspect <= 4/3 and area >= 90 % fits, so all 10 tries fail.
    p = sample_params(50, 10, 100, torch.Generator().manual_seed(0), area=(0.9, 1.0))
    assert p["crop"].tolist() == [[0, 43, 10, 13]] * 50  # h=10, w=round(10*4/3), centred
    # A square image with an impossible ratio range falls back to the whole width.
    p = sample_params(5, 30, 30, torch.Generator().manual_seed(0), ratio=(2.0, 3.0), area=(0.95, 1.0))
    assert p["crop"].tolist() == [[7, 0, 15, 30]] * 5  # top = (30 - 15) // 2


def test_small_mode_params():
    p = sample_params(8000, 28, 28, torch.Generator().manual_seed(0), mode="small", pad=4)
    top, left, h, w = p["crop"].T
    assert (h == 28).all() and (w == 28).all()
    assert set(top.tolist()) == set(range(9)) and set(left.tolist()) == set(range(9))  # 0..2*pad, all reached
    assert abs(p["flip"].float().mean().item() - 0.5) < 0.02


def _stream_stats(p, H, W):
    top, left, h, w = p["crop"].T.double()
    return torch.stack([
        (h * w / (H * W)).mean(), (h * w / (H * W)).std(), torch.log(w / h).mean(), torch.log(w / h).std(),
        ((top + h / 2) / H).mean(), ((left + w / 2) / W).mean(), p["flip"].double().mean(),
        p["brightness"].double().mean(), p["hue"].double().std(), p["alpha"].double().std(),
    ])


def test_per_image_stream_matches_batched_stream():
    """The reference draws one sample at a time with its own generator (the DataLoader path); the batched
    path draws the whole batch from one generator. Same distributions."""
    H, W, n = 36, 48, 3000
    single = [sample_params(1, H, W, torch.Generator().manual_seed(derive_seed(5, i))) for i in range(n)]
    per_image = {k: torch.cat([s[k] for s in single]) for k in single[0]}
    batched = sample_params(12000, H, W, torch.Generator().manual_seed(6))
    a, b = _stream_stats(per_image, H, W), _stream_stats(batched, H, W)
    # Standard errors of these means/stds with n=3000 are <= 0.006; 0.02 is > 3 sigma.
    assert torch.allclose(a, b, atol=0.02), (a, b)


# ----------------------------------------------------------------------------------------- exact cases


@pytest.mark.parametrize("mode", ["paper", "small"])
def test_identity_params_give_the_normalised_image(mode):
    img = make_image(32, 32)
    aug = BatchAugment(32, mode, pad=4)
    p = neutral(2, 32, 32)
    if mode == "small":
        p["crop"][:, :2] = 4  # the unpadded window
    out = aug.apply(img.expand(2, -1, -1, -1), p)
    want = normalize(img.float(), IMAGENET_MEAN, IMAGENET_STD)
    assert (out - want).abs().max().item() < 1e-5
    p["flip"][:] = True
    out = aug.apply(img[None], {k: v[:1] for k, v in p.items()})
    assert (out[0] - want.flip(-1)).abs().max().item() < 1e-5


def test_crop_box_is_the_resampled_region():
    """A crop box exactly out_size large is copied pixel for pixel from the right place."""
    img = make_image(40, 40)
    p = neutral(1, 40, 40)
    p["crop"][0] = torch.tensor([5, 11, 24, 24])  # top, left, h, w
    out = BatchAugment(24, "paper", jitter=0, lighting=0).apply(img[None], p)[0]
    assert (out - normalize(img[:, 5:29, 11:35].float(), IMAGENET_MEAN, IMAGENET_STD)).abs().max() < 1e-5


def test_small_mode_pads_with_zeros_and_matches_reference_exactly():
    img = make_image(28, 28)
    aug = BatchAugment(28, "small", pad=4, mean=(0, 0, 0), std=(1, 1, 1))
    p = neutral(1, 28, 28)  # crop offset (0, 0): the image moves 4 px right and down
    out = aug.apply(img[None], p)[0]
    assert (out[:, :4, :] == 0).all() and (out[:, :, :4] == 0).all()
    assert torch.equal(out[:, 4:, 4:], img[:, :24, :24].float())
    g = torch.Generator().manual_seed(1)
    p = aug.sample_params(64, 28, 28, g)
    batch = aug.apply(img.expand(64, -1, -1, -1), p)
    ref = torch.stack([reference_apply(img, p, 28, mode="small", pad=4, jitter=False, lighting=False,
                                       mean=aug.mean, std=aug.std, index=i) for i in range(64)])
    assert torch.equal(batch, ref)


def test_colour_jitter_semantics():
    aug = BatchAugment(8, "paper", lighting=0, mean=(0, 0, 0), std=(1, 1, 1))
    img = torch.tensor([100.0, 60.0, 30.0]).view(3, 1, 1).expand(3, 8, 8).round().to(torch.uint8)
    grey = torch.full((3, 8, 8), 90, dtype=torch.uint8)
    fwd = torch.tensor(RGB2YIQ)
    yiq_in = fwd @ img[:, 0, 0].float()

    def run(x, **f):
        p = neutral(1, 8, 8)
        for k, v in f.items():
            p[k] = torch.tensor([v])
        return aug.apply(x[None], p)[0]

    assert torch.allclose(run(img, brightness=1.3), img.float() * 1.3, atol=1e-3)
    assert torch.allclose(run(img, brightness=2.8), (img.float() * 2.8).clamp(max=255), atol=1e-3)  # clipped
    # Grey pixels have no chroma: saturation and hue leave them alone.
    assert torch.allclose(run(grey, saturation=0.6, hue=1.4), grey.float(), atol=1e-3)
    # Saturation 0 would be the grey image Y; 1.3 moves away from Y by 1.3x, keeping Y.
    out = run(img, saturation=1.3)[:, 0, 0]
    Y = yiq_in[0]
    assert torch.allclose(out, Y + 1.3 * (img[:, 0, 0].float() - Y), atol=1e-3)
    # Hue factor f rotates (I, Q) by (f - 1)·pi and keeps Y.
    out = run(img, hue=1.25)[:, 0, 0]
    yiq = fwd @ out
    t = 0.25 * math.pi
    want_i = math.cos(t) * yiq_in[1] - math.sin(t) * yiq_in[2]
    want_q = math.sin(t) * yiq_in[1] + math.cos(t) * yiq_in[2]
    assert torch.allclose(yiq, torch.stack([yiq_in[0], want_i, want_q]), atol=1e-2)


def test_jitters_commute_and_sequential_reference_equals_matrix():
    torch.manual_seed(0)
    b, s, h = torch.rand(3, 50) * 0.8 + 0.6
    x = torch.rand(50, 3, 4, 4) * 255
    m = color_matrix(b, s, h)
    # The per-image reference applies brightness, then saturation, then hue, one after another.
    p = {"brightness": b, "saturation": s, "hue": h, "alpha": torch.zeros(50, 3)}
    seq = torch.stack([_seq(x[i], p, i) for i in range(50)])
    mat = (m[:, :, :, None, None] * x[:, None]).sum(2).clamp(0, 255)
    assert (seq - mat).abs().max() < 1e-3
    # Any other order of the three gives the same matrix.
    B = b.view(-1, 1, 1) * torch.eye(3)
    S = color_matrix(torch.ones(50), s, torch.ones(50))
    Hm = color_matrix(torch.ones(50), torch.ones(50), h)
    for order in ([B, S, Hm], [Hm, S, B], [S, Hm, B]):
        assert torch.allclose(order[0] @ order[1] @ order[2], m, atol=1e-5)


def _seq(x, p, i):
    from bagoftricks.data.transforms import _reference_photometric

    return _reference_photometric(x, p, i, True, False)


def test_lighting_adds_the_pca_shift():
    aug = BatchAugment(8, "paper", jitter=0, mean=(0, 0, 0), std=(1, 1, 1))
    x = torch.full((1, 3, 8, 8), 100, dtype=torch.uint8)
    p = neutral(1, 8, 8)
    p["alpha"] = torch.tensor([[1.0, 0.0, -2.0]])
    out = aug.apply(x, p)[0, :, 0, 0]
    vec, val = torch.tensor(EIGVEC), torch.tensor(EIGVAL)
    want = 100 + 255 * (vec[:, 0] * val[0] - 2 * vec[:, 2] * val[2])
    assert torch.allclose(out, want, atol=1e-3)
    assert abs(out[0].item() - (100 - 255 * 0.2175 * 0.5675 - 2 * 255 * 0.0045 * 0.4009)) < 1e-3


def test_grayscale_gets_brightness_only():
    img = torch.full((1, 1, 10, 10), 100, dtype=torch.uint8)
    aug = BatchAugment(10, "paper", mean=(50,), std=(2,))
    p = neutral(1, 10, 10)
    p.update(saturation=torch.tensor([1.4]), hue=torch.tensor([0.6]), alpha=torch.tensor([[3.0, 3.0, 3.0]]))
    assert torch.allclose(aug.apply(img, p), torch.full((1, 1, 10, 10), 25.0))
    p["brightness"] = torch.tensor([1.2])
    assert torch.allclose(aug.apply(img, p), torch.full((1, 1, 10, 10), 35.0))
    out = aug(torch.randint(0, 256, (16, 1, 20, 20), dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert out.shape == (16, 1, 10, 10)
    ref = paper_train_transform(img[0], 10, torch.Generator().manual_seed(0), mean=(50,), std=(2,))
    assert ref.shape == (1, 10, 10)
    with pytest.raises(ValueError, match="3 values but the images have 1 channels"):
        BatchAugment(10)(img, torch.Generator())


# --------------------------------------------------------------------------------- reference vs batched


def test_same_params_same_pixels():
    """Given the same parameters, the reference and the batched path produce (nearly) the same images;
    they differ only in the filter used when a crop is shrunk (antialiased bilinear vs roi_align's box
    average of bilinear samples)."""
    img = make_image(40, 40)
    aug = BatchAugment(32, "paper")
    p = aug.sample_params(300, 40, 40, torch.Generator().manual_seed(3))
    batch = aug.apply(img.expand(300, -1, -1, -1), p)
    ref = torch.stack([reference_apply(img, p, 32, index=i) for i in range(300)])
    diff = (batch - ref).abs()
    # normalised units: 0.01 ~ 0.6 grey level; the max is at the image's sharp vertical edge
    assert diff.mean() < 0.01 and diff.max() < 1.0
    enlarged = (p["crop"][:, 2] <= 32) & (p["crop"][:, 3] <= 32)  # no shrinking: same bilinear weights
    inner = diff[enlarged][:, :, 1:-1, 1:-1]
    assert enlarged.sum() > 50 and inner.max() < 0.05


def _pixel_stats(out):
    S = out.shape[-1]
    return {
        "mean": out.mean(dim=(0, 2, 3)),
        "std": out.std(dim=(0, 2, 3)),
        "sample_mean_std": out.mean(dim=(2, 3)).std(0),  # spread of per-image colour: jitter, lighting
        "spatial_std": out.std(dim=(2, 3)).mean(0),  # contrast inside an image: crop scale, saturation
        "left_minus_right": out[..., : S // 2].mean((0, 2, 3)) - out[..., S // 2 :].mean((0, 2, 3)),  # flips
    }


def test_reference_and_batched_agree_in_distribution():
    """1024 per-image reference outputs (own generator each) against 4096 batched outputs.

    Tolerances are ~2x the largest gap seen between independent seeds; each of these bugs breaks at least
    one: no flip (left_minus_right off by 0.7), jitter 0.2 instead of 0.4 (std off by 0.36), lighting 1.0
    instead of 0.1 (sample_mean_std off by 0.25), area from 30 % (spatial_std off by 0.09)."""
    img = make_image()
    S = 24
    ref = torch.stack([paper_train_transform(img, S, torch.Generator().manual_seed(derive_seed(0, i)))
                       for i in range(1024)])
    batch = BatchAugment(S, "paper")(img.expand(4096, -1, -1, -1), torch.Generator().manual_seed(1))
    a, b = _pixel_stats(ref), _pixel_stats(batch)
    tol = {"mean": 0.06, "std": 0.06, "sample_mean_std": 0.06, "spatial_std": 0.03, "left_minus_right": 0.2}
    for k, t in tol.items():
        assert (a[k] - b[k]).abs().max() < t, (k, a[k], b[k])
    # ...and the test statistic does see a broken batched pipeline.
    bad = BatchAugment(S, "paper", area=(0.3, 1.0))(img.expand(4096, -1, -1, -1), torch.Generator().manual_seed(1))
    assert (_pixel_stats(bad)["spatial_std"] - a["spatial_std"]).abs().max() > tol["spatial_std"]


@pytest.mark.parametrize("H, W", [(24, 44), (44, 26)])
def test_whole_image_in_a_canvas_agrees_with_the_per_image_path(H, W):
    """A non-square image held in the top-left of a square canvas (an in-memory image folder) with its
    size: the batched crops come from the image alone, so the outputs agree in distribution with the
    per-image reference on the image itself; without its size, crops take in the zero canvas and differ."""
    img = make_image(H, W)
    S, side = 24, max(H, W)
    canvas = torch.zeros(3, side, side, dtype=torch.uint8)
    canvas[:, :H, :W] = img
    ref = torch.stack([paper_train_transform(img, S, torch.Generator().manual_seed(derive_seed(0, i)))
                       for i in range(1024)])
    sizes = torch.tensor([[H, W]]).expand(4096, 2)
    aug = BatchAugment(S, "paper")
    batch = aug(canvas.expand(4096, -1, -1, -1), torch.Generator().manual_seed(1), sizes=sizes)
    p = aug.sample_params(4096, side, side, torch.Generator().manual_seed(1), sizes=sizes)
    top, left, h, w = p["crop"].double().unbind(1)
    assert bool(((top + h <= H) & (left + w <= W)).all())
    assert bool(((h * w >= 0.08 * H * W * (1 - 1e-9)) & (h * w <= H * W)).all())
    assert int((left + w).max()) == W and int((top + h).max()) == H   # the image edges are reached
    a, b = _pixel_stats(ref), _pixel_stats(batch)
    tol = {"mean": 0.06, "std": 0.06, "sample_mean_std": 0.06, "spatial_std": 0.03, "left_minus_right": 0.2}
    for k, t in tol.items():
        assert (a[k] - b[k]).abs().max() < t, (k, a[k], b[k])
    blind = _pixel_stats(aug(canvas.expand(4096, -1, -1, -1), torch.Generator().manual_seed(1)))
    assert any((blind[k] - a[k]).abs().max() > t for k, t in tol.items())


def test_batched_is_deterministic_and_per_sample():
    img = make_image()
    aug = BatchAugment(24, "paper")
    x = img.expand(16, -1, -1, -1)
    a = aug(x, torch.Generator().manual_seed(7))
    assert torch.equal(a, aug(x, torch.Generator().manual_seed(7)))
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(8)))
    assert all(not torch.equal(a[0], a[i]) for i in range(1, 16))  # each sample its own parameters


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_batched_on_cuda_matches_cpu_given_params():
    img = make_image()
    aug = BatchAugment(24, "paper")
    p = aug.sample_params(64, 40, 40, torch.Generator().manual_seed(0))
    cpu = aug.apply(img.expand(64, -1, -1, -1), p)
    gpu = aug.apply(img.expand(64, -1, -1, -1).cuda(), {k: v.cuda() for k, v in p.items()})
    assert gpu.device.type == "cuda" and (gpu.cpu() - cpu).abs().max() < 1e-3
    out = aug(img.expand(64, -1, -1, -1).cuda(), torch.Generator(device="cuda").manual_seed(0))
    assert out.shape == (64, 3, 24, 24) and out.device.type == "cuda"


# ------------------------------------------------------------------------------------------------ eval


def test_eval_transform():
    t = EvalTransform(224)
    assert t.resize_size == 256
    img = torch.randint(0, 256, (3, 256, 320), dtype=torch.uint8)
    # Shorter edge already 256: no resampling, just the centre 224x224.
    want = normalize(img[:, 16:240, 48:272].float(), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(t(img), want, atol=1e-5)
    big = torch.randint(0, 256, (2, 3, 300, 500), dtype=torch.uint8)
    out = t(big)
    assert out.shape == (2, 3, 224, 224)
    assert torch.allclose(out[1], t(big[1]), atol=1e-5)  # batched == per image
    # Stored size == out_size (28/32 px data): only normalised.
    small = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(EvalTransform(32)(small), normalize(small.float(), IMAGENET_MEAN, IMAGENET_STD))
    # A smooth gradient keeps its orientation and range.
    ramp = torch.arange(400).float().div(400 / 255).expand(3, 300, 400).to(torch.uint8)
    o = EvalTransform(64, mean=(0, 0, 0), std=(1, 1, 1))(ramp)
    assert (o[:, :, 1:] >= o[:, :, :-1] - 1e-3).all() and o.min() > 10 and o.max() < 245


def test_none_mode():
    img = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    aug = BatchAugment(32, "none")
    assert torch.allclose(aug(img, torch.Generator()), normalize(img.float(), IMAGENET_MEAN, IMAGENET_STD))
    assert BatchAugment(16, "none")(img, torch.Generator()).shape == (4, 3, 16, 16)
