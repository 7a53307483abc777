"""Image files: sample grids (PNG) and individual samples (PNG or JPEG q75, as the authors)."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from lct_jax import writer


def grid(images: np.ndarray, cols: int | None = None, pad: int = 2, upscale: int = 1) -> np.ndarray:
    """uint8 NHWC images -> one uint8 HWC grid (grey images stay grey)."""
    n, h, w, c = images.shape
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = img
    if upscale > 1:
        out = out.repeat(upscale, axis=0).repeat(upscale, axis=1)
    return out


def save_image(path: str, image: np.ndarray, quality: int = 75) -> None:
    """Save a uint8 HWC image; JPEG uses PIL's quality (75 = PIL's default, the authors')."""
    img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if path.lower().endswith(('.jpg', '.jpeg')):
        writer.save_pil_image(img, path, quality=quality)
    else:
        writer.save_pil_image(img, path)


def save_grid(path: str, images: np.ndarray, min_size: int = 512) -> None:
    """A grid PNG at least `min_size` px wide: small images (8x8 digits) are scaled up by an
    integer factor, nearest-neighbour, so each pixel stays a sharp square one can judge."""
    cols = int(math.ceil(math.sqrt(len(images))))
    width = cols * (images.shape[2] + 2) + 2
    upscale = max(1, math.ceil(min_size / width))
    save_image(path, grid(images, cols, upscale=upscale))
