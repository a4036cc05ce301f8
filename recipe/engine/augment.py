"""Augmentations applied on the device inside the training loop (regularize's augment rung)."""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import torch

Augment = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
NOISE_STD = 0.1   # in normalized units: features are standardized, so a tenth of a standard deviation
MAX_SHIFT = 1     # pixels, for images as small as 8x8


def _shift(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random translation of each image by up to MAX_SHIFT pixels with zero (= mean after normalization) padding.

    Each image draws its own offset, as a per-image random crop does. One offset for the whole batch is a
    coarser augmentation: on digits with a 12% train split it scored val 0.928 against 0.936 (3 seeds)."""
    b, c, h, w = img.shape
    pad = torch.nn.functional.pad(img, (MAX_SHIFT,) * 4)                                        # (B, C, H+2s, W+2s)
    dy = torch.randint(0, 2 * MAX_SHIFT + 1, (b,), generator=gen, device=img.device)          # (B,)
    dx = torch.randint(0, 2 * MAX_SHIFT + 1, (b,), generator=gen, device=img.device)
    rows = dy[:, None] + torch.arange(h, device=img.device)                                   # (B, H)
    cols = dx[:, None] + torch.arange(w, device=img.device)                                   # (B, W)
    batch = torch.arange(b, device=img.device)[:, None, None, None]
    chan = torch.arange(c, device=img.device)[None, :, None, None]
    return pad[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]                   # (B, C, H, W)


def build(kinds: Sequence[str], shape: Sequence[int]) -> Optional[Augment]:
    """A batch transform for `kinds` (hflip, crop, shift, noise), or None when there is nothing to do.

    A partial of a module-level function, not a closure: train.devices sends it to the other ranks by pickle."""
    kinds = list(kinds)
    if not kinds:
        return None
    return functools.partial(_apply, tuple(kinds), tuple(shape))


def _apply(kinds: tuple, shape: tuple, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
    if len(shape) == 3 and any(k in kinds for k in ("hflip", "crop", "shift")):
        img = x.reshape(len(x), *shape)
        if "hflip" in kinds:
            flip = torch.rand(len(x), generator=gen, device=x.device) < 0.5
            img = torch.where(flip[:, None, None, None], img.flip(-1), img)
        if "crop" in kinds or "shift" in kinds:
            img = _shift(img, gen)
        x = img.reshape(len(x), -1)
    if "noise" in kinds:
        x = x + NOISE_STD * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    return x, y
