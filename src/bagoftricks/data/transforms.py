"""The training and evaluation pipelines of the paper (He et al. 2019, §2), per image and batched.

All pixel values are on the 0..255 scale until the final normalisation ``(x - mean) / std``.

Training pipeline, in order (§2):

1. **Random-resized crop.** Up to 10 tries: target area uniform in ``area`` (default [8 %, 100 %]) of
   H·W, aspect ratio w/h log-uniform in ``ratio`` ([3/4, 4/3]); w = round(sqrt(A·r)), h = round(sqrt(A/r)).
   A try is accepted only if the *rounded* box fits in the image and still satisfies both ranges, so
   every crop provably has area in [area0, area1]·H·W and aspect in [r0, r1]. After 10 failures: the
   centre crop of the whole image (clipped to the ratio range). Position uniform over the valid
   integer offsets. The box is resized to ``out_size`` x ``out_size`` bilinearly.
2. **Horizontal flip** with probability ``flip``.
3. **Colour jitter.** Brightness, saturation and hue factors b, s, f each uniform in
   [1 - jitter, 1 + jitter]:
     - brightness: x -> b·x;
     - saturation: x -> Y + s·(x - Y), Y = 0.299 R + 0.587 G + 0.114 B (blend with the grey image);
     - hue: a "factor" has no meaning for an angle, so, like MXNet's ``HueJitterAug`` (the toolkit the
       paper used), f rotates the chroma plane (I, Q) of YIQ space by the angle (f - 1)·π, i.e. up to
       ±0.4π = ±72° for jitter 0.4. Y is unchanged.
   **Order.** Without clipping in between, the three are linear maps that commute exactly: in YIQ,
   brightness is b·I, saturation is diag(1, s, s) (Y of the grey image is Y; I and Q of a grey pixel
   are 0 because their coefficients sum to 0) and hue is a rotation of (I, Q), which commutes with a
   uniform scaling of (I, Q). So the order is immaterial and we apply them as one 3x3 matrix per
   sample; the result is clipped to [0, 255] once, after all three (MXNet never clips; torchvision
   clips after each, which would make the order matter).
4. **PCA lighting** (AlexNet): alpha ~ N(0, lighting) per sample (3 values), and every pixel gets
   ``EIGVEC @ (alpha * EIGVAL) * 255`` added (eigen-decomposition of ImageNet RGB covariance on the
   0..1 scale, hence the x255). Not clipped, as in AlexNet/fb.resnet.torch/MXNet.
5. **Normalise** with ``mean``/``std`` on the 0..255 scale (ImageNet: 123.68, 116.779, 103.939 /
   58.393, 57.12, 57.375).

Non-RGB input (1 channel, e.g. Fashion-MNIST): hue, saturation and lighting are defined on RGB only,
so only brightness is applied (then clipped). Their random values are still drawn, so the random
stream does not depend on the channel count.

Two implementations, identical in distribution:

* ``paper_train_transform`` — the per-image reference (crop by slicing, ``F.interpolate`` bilinear with
  antialiasing, the three jitters applied one after another). Used on the DataLoader path.
* ``BatchAugment`` — the whole batch at once, on any device, no per-image Python loop: one
  ``torchvision.ops.roi_align`` call (aligned, adaptive sampling: a box average of bilinear samples
  when shrinking, plain bilinear when enlarging) resamples every crop, flips are a ``torch.where``,
  jitter is a batched 3x3 matrix product.

Both draw their parameters with the same function, ``sample_params``, so the parameter distributions
are the same by construction; only the resampling filter differs when a crop is shrunk.

Evaluation (§2): resize the shorter edge to round(out_size / crop_ratio) (256 for 224), centre crop
out_size, normalise. Images already at out_size x out_size (28/32 px datasets evaluated at their
stored size) are only normalised: the resize+crop would zoom by 1/0.875 for no reason. Use
crop_ratio=1.0 to resize the whole shorter edge to out_size instead.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .catalog import AUGMENTS, IMAGENET_MEAN, IMAGENET_STD, PAD_MODES

_PAD = {"zeros": "constant", "reflect": "reflect"}  # data.pad_mode -> torch.nn.functional.pad's mode

# AlexNet's eigen-decomposition of the ImageNet RGB covariance (pixels on the 0..1 scale); column j of
# EIGVEC is the eigenvector of EIGVAL[j].
EIGVAL = (0.2175, 0.0188, 0.0045)
EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
# NTSC RGB -> YIQ. The I and Q rows sum to zero, so grey pixels have no chroma.
RGB2YIQ = (
    (0.299, 0.587, 0.114),
    (0.596, -0.274, -0.322),
    (0.211, -0.523, 0.312),
)
TRIES = 10


@functools.lru_cache(maxsize=64)
def _const(values: tuple, device: torch.device) -> torch.Tensor:
    # Constants are built once per device, not uploaded again for every batch.
    return torch.tensor(values, dtype=torch.float32, device=device)


def _t(values, device) -> torch.Tensor:
    return _const(tuple(values), torch.device(device))


def _yiq(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return _t(RGB2YIQ, device), _yiq2rgb(torch.device(device))


@functools.lru_cache(maxsize=16)
def _yiq2rgb(device: torch.device) -> torch.Tensor:
    """The exact inverse of RGB2YIQ (not the rounded textbook one), so a zero rotation is the identity.

    Computed on first use, in float64 on the CPU, then rounded to float32 once."""
    inv = torch.linalg.inv(torch.tensor(RGB2YIQ, dtype=torch.float64))
    return inv.to(torch.float32).to(device)


def _mix(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-pixel colour matrix: m [3, 3] or [B, 3, 3], x [3, H, W] or [B, 3, H, W].

    Written as 9 broadcast multiply-adds rather than a matmul: a 3-row GEMM gains nothing from BLAS,
    and on a busy CPU the BLAS thread pool made it 100x slower than this.
    """
    m = m[..., None, None]  # [..., 3, 3, 1, 1]
    r, g, b = x.unbind(-3)
    return torch.stack([m[..., c, 0, :, :] * r + m[..., c, 1, :, :] * g + m[..., c, 2, :, :] * b
                        for c in range(3)], dim=-3)


def _stats(values: Sequence[float], channels: int, what: str, device) -> torch.Tensor:
    v = _t(tuple(float(a) for a in values), device)
    if v.numel() == 1:
        v = v.expand(channels)
    if v.numel() != channels:
        raise ValueError(f"{what} has {v.numel()} values but the images have {channels} channels")
    return v.view(channels, 1, 1)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel, x float [..., C, H, W] on the 0..255 scale."""
    c = x.shape[-3]
    return (x - _stats(mean, c, "mean", x.device)) / _stats(std, c, "std", x.device)


def resize_shorter_center_crop(x: torch.Tensor, shorter: int, crop: int, mode: str = "bilinear") -> torch.Tensor:
    """Resize so the shorter edge is ``shorter`` (aspect kept; ``mode`` bilinear or bicubic, antialiased), then
    take the centre ``crop`` x ``crop``. x: [C,H,W] or [B,C,H,W], any dtype; returns float32 on x's device."""
    single = x.dim() == 3
    x = (x[None] if single else x).float()
    h, w = x.shape[-2:]
    if min(h, w) != shorter:
        s = shorter / min(h, w)
        nh, nw = max(crop, round(h * s)), max(crop, round(w * s))
        x = F.interpolate(x, size=(nh, nw), mode=mode, align_corners=False, antialias=True)
        h, w = nh, nw
    if h < crop or w < crop:
        raise ValueError(f"cannot centre-crop {crop}x{crop} from {h}x{w}")
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    x = x[..., top : top + crop, left : left + crop]
    return x[0] if single else x


# ----------------------------------------------------------------------------------------------------
# Parameters


def _check_mode(mode: str) -> None:
    if mode not in AUGMENTS:
        raise ValueError(f"mode must be one of {AUGMENTS}, got {mode!r}")


def sample_params(batch: int, H: int, W: int, generator: torch.Generator | None = None, *,
                  mode: str = "paper", area: tuple[float, float] = (0.08, 1.0),
                  ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: float = 0.5, jitter: float = 0.4,
                  lighting: float = 0.1, pad: int = 4, sizes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-sample random parameters, as tensors on the generator's device:

    ``sizes`` (int64 [B, 2], mode "paper" only): each sample's own (height, width), an image held in the
    top-left corner of a larger H x W canvas (an in-memory image folder); its crop is drawn from it alone.

    ``crop`` int64 [B, 4] = (top, left, height, width) — in the image for mode "paper", in the image
    zero-padded by ``pad`` on every side for mode "small" (height, width = H, W); ``flip`` bool [B];
    ``brightness``, ``saturation``, ``hue`` float [B] (factors); ``alpha`` float [B, 3] (lighting).

    The draws always happen in the same order and number for a given mode, whatever the strengths
    (a zero strength just gives neutral values).
    """
    _check_mode(mode)
    dev = generator.device if generator is not None else torch.device("cpu")
    if mode == "none":
        return _neutral_params(batch, H, W, dev)
    kw = dict(generator=generator, device=dev)
    f64 = torch.float32 if dev.type == "mps" else torch.float64  # exact integer box arithmetic; MPS lacks fp64
    if mode == "paper":
        hs, ws = (H, W) if sizes is None else (sizes[:, 0].to(dev, f64), sizes[:, 1].to(dev, f64))
        crop = _random_resized_crops(batch, hs, ws, area, ratio, f64, kw)
    else:
        crop = _padded_crops(batch, H, W, pad, f64, kw)
    flips = torch.rand(batch, **kw) < flip
    factors = 1 + jitter * (2 * torch.rand(batch, 3, **kw) - 1)
    alpha = torch.randn(batch, 3, **kw) * lighting
    return {"crop": crop, "flip": flips, "brightness": factors[:, 0].contiguous(),
            "saturation": factors[:, 1].contiguous(), "hue": factors[:, 2].contiguous(), "alpha": alpha}


def _neutral_params(B: int, H: int, W: int, dev: torch.device) -> dict[str, torch.Tensor]:
    """Mode "none": the whole image, no flip, neutral factors; nothing is drawn."""
    z = torch.zeros(B, dtype=torch.long, device=dev)
    return {"crop": torch.stack([z, z, z + H, z + W], 1), "flip": torch.zeros(B, dtype=torch.bool, device=dev),
            "brightness": torch.ones(B, device=dev), "saturation": torch.ones(B, device=dev),
            "hue": torch.ones(B, device=dev), "alpha": torch.zeros(B, 3, device=dev)}


def _padded_crops(B: int, H: int, W: int, pad: int, f64: torch.dtype, kw: dict) -> torch.Tensor:
    """Mode "small": an H x W window at a uniform offset in the image zero-padded by ``pad``."""
    u_pos = torch.rand(B, 2, dtype=f64, **kw)
    off = torch.floor(u_pos * (2 * pad + 1)).clamp_(max=2 * pad).long()
    return torch.stack([off[:, 0], off[:, 1], torch.full_like(off[:, 0], H), torch.full_like(off[:, 0], W)], 1)


def _random_resized_crops(B: int, H: int | torch.Tensor, W: int | torch.Tensor, area: tuple[float, float],
                          ratio: tuple[float, float], f64: torch.dtype, kw: dict) -> torch.Tensor:
    """Mode "paper": step 1 of the module docstring, TRIES tries per sample drawn at once. H and W are
    the image size, or float [B] tensors of each sample's own size."""
    a0, a1 = area
    r0, r1 = ratio
    if not (0 < a0 <= a1 <= 1) or not (0 < r0 <= r1):
        raise ValueError(f"need 0 < area0 <= area1 <= 1 and 0 < ratio0 <= ratio1, got {area}, {ratio}")
    u_area = torch.rand(B, TRIES, dtype=f64, **kw)
    u_ratio = torch.rand(B, TRIES, dtype=f64, **kw)
    u_pos = torch.rand(B, 2, dtype=f64, **kw)
    H = torch.as_tensor(H, dtype=f64, device=u_pos.device).expand(B)
    W = torch.as_tensor(W, dtype=f64, device=u_pos.device).expand(B)
    hw = (H * W)[:, None]
    target = hw * (a0 + (a1 - a0) * u_area)
    aspect = torch.exp(math.log(r0) + (math.log(r1) - math.log(r0)) * u_ratio)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    eps = 1e-9 if f64 == torch.float64 else 1e-6
    valid = ((w >= 1) & (h >= 1) & (w <= W[:, None]) & (h <= H[:, None])
             & (w * h >= a0 * hw * (1 - eps)) & (w * h <= a1 * hw * (1 + eps))
             & (w >= r0 * h * (1 - eps)) & (w <= r1 * h * (1 + eps)))
    first = valid.int().argmax(dim=1, keepdim=True)  # index of the first accepted try
    ok = valid.any(dim=1)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    fw, fh = _fallback_box(H, W, r0, r1)
    w, h = torch.where(ok, w, fw), torch.where(ok, h, fh)
    top = torch.minimum(torch.floor(u_pos[:, 0] * (H - h + 1)), H - h)
    left = torch.minimum(torch.floor(u_pos[:, 1] * (W - w + 1)), W - w)
    top = torch.where(ok, top, torch.div(H - fh, 2, rounding_mode="floor"))
    left = torch.where(ok, left, torch.div(W - fw, 2, rounding_mode="floor"))
    return torch.stack([top, left, h, w], dim=1).long()


def _fallback_box(H: torch.Tensor, W: torch.Tensor, r0: float, r1: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(width, height) after TRIES failures: the whole image, narrowed to the ratio range (torchvision's rule)."""
    too_tall, too_wide = r0 > W / H, r1 < W / H
    fw = torch.where(too_wide, torch.minimum(W, torch.round(H * r1)), W)
    fh = torch.where(too_tall, torch.minimum(H, torch.round(W / r0)), H)
    return fw, fh


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for tiny (batched) matrices, without BLAS (see ``_mix``)."""
    return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)


def color_matrix(brightness: torch.Tensor, saturation: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """[B, 3, 3] RGB -> RGB matrix of brightness·saturation·hue (they commute; see module docstring)."""
    fwd, inv = _yiq(brightness.device)
    theta = (hue - 1) * math.pi
    c, s = torch.cos(theta) * saturation, torch.sin(theta) * saturation
    m = torch.zeros(brightness.shape[0], 3, 3, device=brightness.device)
    m[:, 0, 0] = 1
    m[:, 1, 1], m[:, 1, 2], m[:, 2, 1], m[:, 2, 2] = c, -s, s, c
    return brightness.view(-1, 1, 1) * _mm(_mm(inv, m), fwd)


def lighting_shift(alpha: torch.Tensor) -> torch.Tensor:
    """[B, 3] RGB offsets on the 0..255 scale: EIGVEC @ (alpha * EIGVAL) * 255."""
    vec = _t(EIGVEC, alpha.device)
    val = _t(EIGVAL, alpha.device)
    return ((alpha * val)[:, None, :] * vec).sum(-1) * 255.0


# ----------------------------------------------------------------------------------------------------
# Per-image reference


def _reference_photometric(x: torch.Tensor, p: dict[str, torch.Tensor], i: int,
                           use_jitter: bool, use_lighting: bool) -> torch.Tensor:
    """x float [C, S, S], one sample's jitter and lighting, applied one operation after another."""
    if x.shape[0] != 3:
        if use_jitter:
            x = (x * float(p["brightness"][i])).clamp(0, 255)
        return x
    if use_jitter:
        x = x * float(p["brightness"][i])
        gray = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
        x = gray + float(p["saturation"][i]) * (x - gray)
        fwd, inv = _yiq(x.device)
        yiq = _mix(fwd, x)
        t = (float(p["hue"][i]) - 1) * math.pi
        ci, cq = yiq[1].clone(), yiq[2].clone()
        yiq[1] = math.cos(t) * ci - math.sin(t) * cq
        yiq[2] = math.sin(t) * ci + math.cos(t) * cq
        x = _mix(inv, yiq).clamp(0, 255)
    if use_lighting:
        vec, val = _t(EIGVEC, x.device), _t(EIGVAL, x.device)
        shift = (vec * (p["alpha"][i].to(x.device, torch.float32) * val)).sum(-1) * 255.0
        x = x + shift.view(3, 1, 1)
    return x


def crop_resize(img: torch.Tensor, box: Sequence[int], size: int) -> torch.Tensor:
    """One [C, H, W] image's crop (top, left, height, width) as float, resized to size x size (bilinear,
    antialiased) unless it is that size already: the per-image path's crop, which data.decode: device reuses."""
    top, left, h, w = box
    x = img[:, top : top + h, left : left + w].float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return x


def reference_apply(img: torch.Tensor, params: dict[str, torch.Tensor], out_size: int, *, mode: str = "paper",
                    pad: int = 4, jitter: bool = True, lighting: bool = True, pad_mode: str = "zeros",
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    index: int = 0) -> torch.Tensor:
    """Apply sample ``index`` of ``params`` to one uint8 [C, H, W] image, the slow and obvious way."""
    top, left, h, w = (int(v) for v in params["crop"][index].tolist())
    if mode == "none":
        x = resize_shorter_center_crop(img, out_size, out_size)
    else:
        src = F.pad(img, (pad, pad, pad, pad), mode=_PAD[pad_mode]) if mode == "small" else img
        x = crop_resize(src, (top, left, h, w), out_size)
        if bool(params["flip"][index]):
            x = x.flip(-1)
        x = _reference_photometric(x, params, index, jitter, lighting)
    return normalize(x, mean, std)


def paper_train_transform(img: torch.Tensor, out_size: int, generator: torch.Generator | None = None, *,
                          area: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                          flip: float = 0.5, jitter: float = 0.4, lighting: float = 0.1,
                          mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """§2 training transform of one uint8 [C, H, W] image -> float [C, out_size, out_size], normalised."""
    _, H, W = img.shape
    p = sample_params(1, H, W, generator, mode="paper", area=area, ratio=ratio, flip=flip, jitter=jitter,
                      lighting=lighting)
    return reference_apply(img, p, out_size, mode="paper", jitter=jitter > 0, lighting=lighting > 0,
                           mean=mean, std=std)


# ----------------------------------------------------------------------------------------------------
# Batched


class BatchAugment:
    """Augment a whole uint8 [B, C, H, W] batch on its device with per-sample random parameters.

    mode "paper": §2 pipeline (random-resized crop, flip, jitter, lighting, normalise).
    mode "small": zero-pad ``pad`` px, random crop back to H x W, flip — the usual CIFAR/MNIST preset;
                  resized to out_size if that differs from H x W; then colour jitter (brightness only
                  on 1 channel) and lighting (3 channels) of strengths ``jitter``/``lighting``, as in "paper".
    mode "none":  resize shorter edge to out_size + centre crop if needed, normalise (no jitter).
    When not given, ``jitter``/``lighting`` are the paper's 0.4/0.1 in mode "paper" and 0 in mode
    "small"; a run always gives the recipe's ``data.jitter``/``data.lighting`` (defaults 0.4/0.1), so
    the "small" preset of a recipe has them unless the recipe sets them to 0.
    """

    def __init__(self, out_size: int, mode: str = "paper", *, area: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: float = 0.5, jitter: float | None = None,
                 lighting: float | None = None, pad: int = 4, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, pad_mode: str = "zeros") -> None:
        _check_mode(mode)
        if pad_mode not in PAD_MODES:
            raise ValueError(f"unknown pad_mode {pad_mode!r}; valid: {', '.join(PAD_MODES)}")
        self.pad_mode = pad_mode
        if not 0 <= flip <= 1:
            raise ValueError(f"flip must be a probability, got {flip}")
        self.out_size, self.mode = int(out_size), mode
        self.area, self.ratio, self.flip, self.pad = tuple(area), tuple(ratio), float(flip), int(pad)
        self.jitter = float(jitter if jitter is not None else (0.4 if mode == "paper" else 0.0))
        self.lighting = float(lighting if lighting is not None else (0.1 if mode == "paper" else 0.0))
        if not 0 <= self.jitter < 1 or self.lighting < 0:
            raise ValueError(f"need 0 <= jitter < 1 and lighting >= 0, got {self.jitter}, {self.lighting}")
        self.mean, self.std = tuple(mean), tuple(std)

    def __repr__(self) -> str:
        return (f"BatchAugment(out_size={self.out_size}, mode={self.mode!r}, area={self.area}, ratio={self.ratio}, "
                f"flip={self.flip}, jitter={self.jitter}, lighting={self.lighting}, pad={self.pad}, "
                f"pad_mode={self.pad_mode!r})")

    def sample_params(self, batch: int, H: int, W: int, generator: torch.Generator | None = None,
                      sizes: torch.Tensor | None = None) -> dict:
        return sample_params(batch, H, W, generator, mode=self.mode, area=self.area, ratio=self.ratio,
                             flip=self.flip, jitter=self.jitter, lighting=self.lighting, pad=self.pad, sizes=sizes)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 sizes: torch.Tensor | None = None) -> torch.Tensor:
        """``sizes``: each image's own (height, width) in the top-left of the batch's canvas, or None."""
        if images.dim() != 4:
            raise ValueError(f"BatchAugment expects [B, C, H, W], got {tuple(images.shape)}")
        B, _, H, W = images.shape
        return self.apply(images, self.sample_params(B, H, W, generator, sizes))

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Deterministic part: apply given per-sample ``params`` to a uint8 (or 0..255 float) batch."""
        B, C, H, W = images.shape
        S = self.out_size
        dev = images.device
        if self.mode == "none":
            return normalize(resize_shorter_center_crop(images, S, S), self.mean, self.std)
        crop = params["crop"].to(dev)
        flip = params["flip"].to(dev)
        if self.mode == "paper":
            from torchvision.ops import roi_align

            top, left, h, w = crop.unbind(1)
            boxes = torch.stack([torch.arange(B, device=dev), left, top, left + w, top + h], 1).float()
            x = roi_align(images.float(), boxes, output_size=(S, S), spatial_scale=1.0, sampling_ratio=-1,
                          aligned=True)
            x = torch.where(flip.view(B, 1, 1, 1), x.flip(-1), x)
        else:  # small: one gather over the zero-padded batch, the flip folded into the column index
            p = self.pad
            padded = F.pad(images, (p, p, p, p), mode=_PAD[self.pad_mode])
            rows = crop[:, 0:1] + torch.arange(H, device=dev)
            j = torch.arange(W, device=dev)
            cols = crop[:, 1:2] + torch.where(flip.view(B, 1), W - 1 - j, j)
            x = padded[torch.arange(B, device=dev).view(B, 1, 1), :, rows.view(B, H, 1), cols.view(B, 1, W)]
            x = x.permute(0, 3, 1, 2).float()
            if (H, W) != (S, S):
                x = F.interpolate(x, size=(S, S), mode="bilinear", align_corners=False, antialias=True)
        return self.photometric(x, params)

    def photometric(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Steps 3-5 on a batch already cropped, resized and flipped (float [B, C, S, S], 0..255): colour
        jitter, lighting, normalisation."""
        B, C = x.shape[:2]
        dev = x.device
        if self.jitter > 0:
            b = params["brightness"].to(dev)
            if C == 3:
                m = color_matrix(b, params["saturation"].to(dev), params["hue"].to(dev))
                x = _mix(m, x)
            else:
                x = x * b.view(B, 1, 1, 1)
            x = x.clamp(0, 255)
        if self.lighting > 0 and C == 3:
            x = x + lighting_shift(params["alpha"].to(dev)).view(B, 3, 1, 1)
        return normalize(x, self.mean, self.std)

    def per_image(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The per-image reference of the same augmentation (for the DataLoader path): uint8 [C,H,W]
        -> float [C, S, S], parameters drawn by the same ``sample_params``."""
        _, H, W = img.shape
        p = self.sample_params(1, H, W, generator)
        return reference_apply(img, p, self.out_size, mode=self.mode, pad=self.pad, pad_mode=self.pad_mode,
                               jitter=self.jitter > 0,
                               lighting=self.lighting > 0, mean=self.mean, std=self.std)


class EvalTransform:
    """§2 evaluation: shorter edge to round(out_size / crop_ratio), centre crop, normalise.

    Accepts uint8 [C, H, W] or [B, C, H, W] (a batch shares one size); returns float32 on the input's
    device. Images already out_size x out_size are only normalised. Call it as ``t(x)`` or, on the
    DataLoader path, ``t(x, generator=...)`` (the generator is ignored). ``interpolation``: bilinear
    (ours) or bicubic (what most timm model folders ask for in their pretrained_cfg).
    """

    def __init__(self, out_size: int, crop_ratio: float = 0.875, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, interpolation: str = "bilinear") -> None:
        if not 0 < crop_ratio <= 1:
            raise ValueError(f"crop_ratio must be in (0, 1], got {crop_ratio}")
        if interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"interpolation must be bilinear or bicubic, got {interpolation!r}")
        self.out_size, self.crop_ratio, self.interpolation = int(out_size), float(crop_ratio), interpolation
        self.resize_size = int(round(out_size / crop_ratio))
        self.mean, self.std = tuple(mean), tuple(std)

    def __repr__(self) -> str:
        return f"EvalTransform(out_size={self.out_size}, resize_size={self.resize_size})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if tuple(x.shape[-2:]) == (self.out_size, self.out_size):
            return normalize(x.float(), self.mean, self.std)
        x = resize_shorter_center_crop(x, self.resize_size, self.out_size, self.interpolation)
        return normalize(x, self.mean, self.std)
