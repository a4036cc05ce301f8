"""Image-folder source: one sub-folder per class, PNG/JPEG read with Pillow."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from recipe.data.sources import IMAGE_SUFFIXES, Table
from recipe.errors import DataError


GRAY_MODES = ("L", "1", "P", "I", "I;16")


def image_array(path: Path) -> tuple[np.ndarray, str]:
    """One image as (H, W) grayscale or (H, W, 3) RGB, and its Pillow mode; the one rule training and
    `recipe predict` share. Raises Pillow's UnidentifiedImageError / OSError / ValueError on a bad file."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return np.asarray(im.convert("L" if im.mode in GRAY_MODES else "RGB")), im.mode


def to_chw(images: list[np.ndarray]) -> np.ndarray:
    """Same-shaped images stacked as float32 (N, C, H, W): what the network's rows are made of."""
    x = np.stack(images).astype(np.float32)
    return x[:, None, :, :] if x.ndim == 3 else np.transpose(x, (0, 3, 1, 2))    # (N, 1, H, W) or HWC -> CHW


def read_image_folder(root: Path) -> Table:
    """Read root/<class>/<image>; unreadable files are listed (for data.images), not fatal unless all are."""
    from PIL import UnidentifiedImageError

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: an image folder needs one sub-folder per class (found none)")
    images, labels, files, corrupt, skipped, sizes, modes = [], [], [], [], [], Counter(), Counter()
    for d in class_dirs:
        for f in sorted(d.iterdir()):
            if f.is_dir() or f.name.startswith("."):
                continue
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(str(f.relative_to(root)))
                continue
            try:
                arr, mode = image_array(f)
                modes[mode] += 1
            except (UnidentifiedImageError, OSError, ValueError) as e:
                corrupt.append(f"{f.relative_to(root)} ({e.__class__.__name__})")
                continue
            sizes[arr.shape] += 1
            images.append(arr)
            labels.append(d.name)
            files.append(str(f))
    if not images:
        raise DataError(f"{root}: no readable images in {len(class_dirs)} class folder(s)"
                        + (f" ({len(corrupt)} corrupt, {len(skipped)} non-image files)" if corrupt or skipped else ""))
    target_shape, _ = sizes.most_common(1)[0]
    mixed = {f"{'x'.join(map(str, s))}": c for s, c in sizes.items()}
    keep = [i for i, a in enumerate(images) if a.shape == target_shape]
    dropped = [files[i] for i in range(len(images)) if images[i].shape != target_shape]
    x = to_chw([images[i] for i in keep])
    y = np.array([labels[i] for i in keep], dtype=object)
    extra = {"images": {"corrupt": corrupt, "non_image_files": skipped, "sizes": mixed,
                        "dropped_other_size": [str(Path(p).relative_to(root)) for p in dropped],
                        "modes": dict(modes), "value_range": [float(x.min()), float(x.max())],
                        "layout": "CHW (converted from Pillow's HWC)"}}
    return Table(origin=str(root), matrix=x.reshape(len(x), -1), target=y, target_name="folder",
                 shape=tuple(x.shape[1:]), files=[files[i] for i in keep], extra=extra)
