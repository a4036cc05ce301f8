"""The image kind: a folder with one sub-folder per class (read with Pillow, recipe/data/images.py) or arrays
whose samples are image-shaped ([C, H, W]). A table of pixels to every check, plus data.images, per-channel
normalization (recipe/data/normalize.py), and pictures of samples and of the labels label-noise doubts."""
from __future__ import annotations

from typing import Any

import numpy as np

from recipe import checks as C
from recipe.data.kinds.look import EXAMPLES
from recipe.data.kinds.registry import register
from recipe.data.kinds.table import TableKind


@register
class ImageKind(TableKind):
    name = "images"
    priority = 10

    def claims(self, cfg) -> bool:
        source = cfg.data.source if cfg.data.train is None else cfg.data.train
        return not source.startswith("builtin:") and cfg.resolve(source).is_dir()

    def fits(self, ds) -> bool:
        return len(ds.shape) == 3      # a table whose rows are [C, H, W] samples: digits, image arrays

    def sample_pictures(self, look) -> list[str]:
        """samples.png: 32 train images with their labels."""
        ds = look.ds
        if len(ds.shape) != 3:
            return []
        from recipe import plots

        idx = np.random.default_rng(0).choice(len(ds.train.y), min(32, len(ds.train.y)), replace=False)
        labels = [ds.classes[v] if ds.classes else f"{v:.3g}" for v in ds.train.y[idx]]
        look.artifacts.figure("samples.png", plots.image_grid(ds.train.x[idx], ds.shape, labels, "train samples"))
        return ["samples.png"]

    def finish_pictures(self, look, drawn: list[str]) -> list[str]:
        """label_noise_suspects.png (the images whose labels confident learning doubts most), before features.png."""
        ds = look.ds
        suspects = look.found.get("label_noise_suspects", np.array([], int))
        if len(ds.shape) != 3 or not len(suspects):
            return drawn
        from recipe import plots

        s = suspects[:16]
        look.artifacts.figure("label_noise_suspects.png", plots.image_grid(
            ds.train.x[s], ds.shape, [f"row {ds.train.rows[i]}: {ds.classes[ds.train.y[i]]}" for i in s],
            "most suspicious labels (given label shown)"))
        return drawn[:-1] + ["label_noise_suspects.png"] + drawn[-1:]


def check_images(ds) -> C.Check:
    info = ds.extra.get("images")
    shape = ds.shape
    if info is None and len(shape) != 3:
        return C.make("data.images", "skip", "not image-shaped data")
    ev: dict[str, Any] = {"shape": list(shape)}
    problems, advice = [], []
    if info:
        ev.update(corrupt=info["corrupt"][:EXAMPLES], corrupt_count=len(info["corrupt"]),
                  sizes=info["sizes"], dropped_other_size=len(info["dropped_other_size"]))
        if info["corrupt"]:
            problems.append(f"{len(info['corrupt'])} unreadable file(s)")
            advice.append("remove or re-export the unreadable files")
        if len(info["sizes"]) > 1:
            problems.append(f"mixed image sizes {info['sizes']} ({len(info['dropped_other_size'])} dropped)")
            advice.append("resize all images to one size")
    if len(shape) == 3 and shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4):
        problems.append(f"data.shape {list(shape)} looks channels-last (HWC); models expect CHW")
        advice.append("give data.shape as [C, H, W]")
    x = ds.train.x
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    ev["value_range"] = [lo, hi]
    if hi > 2.0 and ds.norm["kind"] == "none":
        problems.append(f"pixel values span [{lo:.0f}, {hi:.0f}] and are not normalized")
        advice.append("set data.normalize: standard or scale to [0, 1]")
    if problems:
        return C.make("data.images", "warn", "; ".join(problems), ev, "; ".join(advice).capitalize() + ".")
    return C.make("data.images", "pass", f"images {list(shape)} CHW, range [{lo:.3g}, {hi:.3g}]", ev)
