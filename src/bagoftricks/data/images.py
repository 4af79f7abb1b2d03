"""Image files: which ones are images, whether one is readable (and why not), and its decoding.

One place for every reader of image files: class folders (imagefolder.py), the detection and
segmentation folders (transfer/), and `predict`'s files (deploy/images.py).

Decoding uses ``torchvision.io.decode_image`` (libjpeg-turbo/libpng/libwebp/giflib, fast, no PIL
objects) for JPEG, PNG, GIF and WebP, and PIL for everything else or when torchvision fails. Both give
RGB uint8 [3, H, W] at the stored size: grayscale, palette, RGBA/LA (alpha dropped), CMYK and 16-bit
images are converted. `as_channels` turns it into what a model of 1 or 3 channels takes.
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch
from PIL import Image

from bagoftricks.errors import DataError

from .common import read_bytes

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec and warns on every call; the
# PIL fallback below takes over when they are removed. Silence exactly that message.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

# ITU-R BT.601 luma weights: RGB files for a model trained on grey images (Fashion-MNIST)
LUMA = (0.299, 0.587, 0.114)


def image_extensions() -> frozenset[str]:
    """Lower-case extensions of every format PIL can open (not merely save)."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def probe(path: str, verify: bool) -> tuple[tuple[int, int] | None, str | None]:
    """((height, width), None) for a good image, (None, reason) for a bad one."""
    try:
        if os.path.getsize(path) == 0:
            return None, "empty file (0 bytes)"
        with Image.open(path) as im:
            w, h = im.size
            if verify:
                if im.format == "JPEG":
                    im.draft(None, (max(1, w // 8), max(1, h // 8)))
                im.load()
        if w < 1 or h < 1:
            return None, f"empty image ({w}x{h})"
        return (h, w), None
    except Image.UnidentifiedImageError:
        return None, "not an image PIL can identify"
    except Exception as e:  # truncated data, decompression bombs, broken streams, I/O errors
        return None, f"unreadable: {type(e).__name__}: {e}"


def _to_uint8(t: torch.Tensor) -> torch.Tensor:
    if t.dtype == torch.uint8:
        return t
    if t.dtype == torch.uint16:  # 16-bit PNG: keep the high byte
        return (t.to(torch.int32) >> 8).to(torch.uint8)
    return t.clamp(0, 255).to(torch.uint8)


def _decode_pil(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as im:
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float grey: scale, do not clip
            arr = np.asarray(im, dtype=np.float64)
            top = 65535.0 if im.mode != "F" else max(float(arr.max()), 1.0)
            arr = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
            arr = np.repeat(arr[..., None], 3, axis=2)
        else:
            arr = np.array(im.convert("RGB"))
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def _torchvision_can(data: bytes) -> bool:
    return (data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n" or data[:4] == b"GIF8"
            or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"))


def decode_rgb(path: str) -> torch.Tensor:
    """uint8 [3, H, W] at the stored size; DataError naming the file if it cannot be decoded."""
    if not os.path.exists(path):
        raise DataError(f"{path}: image not found")
    data = read_bytes(path)
    if _torchvision_can(data):
        try:
            from torchvision.io import ImageReadMode, decode_image

            t = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
            return _to_uint8(t).contiguous()
        except (ImportError, RuntimeError):
            pass  # codecs missing, or a variant they do not handle: PIL below
    try:
        return _decode_pil(data)
    except Exception as e:
        raise DataError(f"{path}: cannot decode ({type(e).__name__}: {e})") from e


def as_channels(rgb: torch.Tensor, channels: int, path: str = "image") -> torch.Tensor:
    """uint8 RGB [3, H, W] as a model of `channels` channels takes it: itself (3), or its BT.601 luma (1)."""
    if channels == 3:
        return rgb
    if channels == 1:
        w = torch.tensor(LUMA).view(3, 1, 1)
        return (rgb.float() * w).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise DataError(f"{path}: the model takes {channels}-channel images; only 1 (grey) and 3 (RGB) are supported")
