"""recipe predict on an image folder: the images read as training reads them, the recorded normalization."""
import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import invoke


def _write_images(folder, x, labels=None):
    """digits' val rows (integers 0..16, shape 1x8x8) as 8-bit grayscale PNGs: lossless, so the same numbers."""
    for i, row in enumerate(x):
        d = folder / labels[i] if labels is not None else folder
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(row.reshape(8, 8).astype(np.uint8), mode="L").save(d / f"img{i:04d}.png")


def _val(cfg):
    from recipe.config import load
    from recipe.data import load as load_data

    return load_data(load(cfg, []))


def test_image_folder_reproduces_the_recorded_val_score(pipeline, tmp_path):
    cfg, runs, _ = pipeline
    ds = _val(cfg)
    art = json.loads((runs / "digits" / "ensemble" / "ensemble.json").read_text())
    labels = [str(ds.classes[y]) for y in ds.val.y]
    _write_images(tmp_path / "by_class", ds.val.x, labels)
    out = tmp_path / "pred.csv"
    r = invoke("predict", cfg, tmp_path / "by_class", "--runs", runs, "--out", out, "--json")
    assert r.exit_code == 0, r
    expected = {"ensemble": art["val"], "best_single": art["best_single_val"]}[art["final"]]
    assert r.json["rows"] == len(ds.val.y)
    assert r.json["accuracy"] == pytest.approx(expected, abs=1e-6)       # labels from the class folders
    rows = out.read_text().splitlines()
    assert rows[0].split(",")[:2] == ["file", "prediction"]
    names = [row.split(",")[0] for row in rows[1:]]
    assert sorted(names) == sorted(f"{c}/img{i:04d}.png" for i, c in enumerate(labels))
    # a flat folder of the same images: the same predictions, no labels
    _write_images(tmp_path / "flat", ds.val.x)
    np.savez(tmp_path / "val.npz", x=ds.val.x)
    flat = invoke("predict", cfg, tmp_path / "flat", "--runs", runs, "--json")
    npz = invoke("predict", cfg, tmp_path / "val.npz", "--runs", runs, "--json")
    assert flat.exit_code == npz.exit_code == 0, (flat, npz)
    assert flat.json["predictions"] == npz.json["predictions"] and "accuracy" not in flat.json


def test_image_of_another_size_is_refused_by_name(pipeline, tmp_path):
    cfg, runs, _ = pipeline
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(tmp_path / "imgs" / "a.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8), mode="RGB").save(tmp_path / "imgs" / "big.png")
    r = invoke("predict", cfg, tmp_path / "imgs", "--runs", runs)
    assert r.exit_code == 2
    assert "big.png: image is 3x16x16 (CxHxW); the model was trained on 1x8x8 images" in r.stderr
    (tmp_path / "empty").mkdir()
    r = invoke("predict", cfg, tmp_path / "empty", "--runs", runs)
    assert r.exit_code == 2 and "no images" in r.stderr
