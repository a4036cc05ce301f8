"""The bad-input corpus: each case writes a broken file or config and says what the error must name.

Shared by tests/bad_input/test_bad_input.py and scripts/reliability.py. A case is a function
`case(folder) -> (argv, needles)`: argv runs `recipe` (after the command word), and every needle
must appear in the single error message of exit 2.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

Case = Callable[[Path], tuple[list[str], list[str]]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__.removeprefix("case_").replace("_", "-")] = fn
    return fn


def _rows(n: int = 40, classes: int = 2) -> str:
    return "".join(f"{i % 5},{(i * 7) % 11},{i % classes}\n" for i in range(n))


def _config(folder: Path, data: str, name: str = "bad") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nseed: 0\ndata: {data}\nmodel: {{kind: mlp, hidden: [8]}}\n")
    return path


def _inspect(folder: Path, data: str) -> list[str]:
    return ["inspect", str(_config(folder, data)), "--runs", str(folder / "runs")]


def _csv(folder: Path, name: str, content: bytes | str, data: str | None = None) -> tuple[list[str], Path]:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return _inspect(folder, data or f"{{source: {name}}}"), path


# ----------------------------------------------------------------------------- tables


@case
def case_empty_file(folder):
    argv, path = _csv(folder, "empty.csv", b"")
    return argv, ["empty.csv", "empty"]


@case
def case_header_only(folder):
    argv, path = _csv(folder, "header.csv", "a,b,label\n")
    return argv, ["header.csv", "header only"]


@case
def case_ragged_rows(folder):
    argv, path = _csv(folder, "ragged.csv", "a,b,label\n" + _rows(10) + "1,2\n" + _rows(10))
    return argv, ["ragged.csv", "malformed CSV", "line"]


@case
def case_wrong_delimiter(folder):
    argv, path = _csv(folder, "semi.csv", "a;b;label\n" + _rows(30).replace(",", ";"))
    return argv, ["semi.csv", "delimiter"]


@case
def case_non_utf8_bytes(folder):
    body = "a,b,label\n" + _rows(20)
    argv, path = _csv(folder, "latin.csv", body.encode() + "caf\u00e9,1,0\n".encode("latin-1"))
    return argv, ["latin.csv", "UTF-8"]


@case
def case_non_utf8_late(folder):
    # the bad byte sits far past the first block the reader sniffs
    body = "a,b,label\n" + _rows(2000)
    argv, path = _csv(folder, "late.csv", body.encode() + b"\xff\xfe,1,0\n")
    return argv, ["late.csv", "UTF-8"]


@case
def case_bom_with_target_missing(folder):
    # a BOM is stripped from the first column name; the target is then honestly absent
    argv, path = _csv(folder, "bom.csv", "\ufeffa,b,klass\n" + _rows(30), "{source: bom.csv, target: label}")
    return argv, ["bom.csv", "'label'", "data.target"]


@case
def case_duplicate_columns(folder):
    argv, path = _csv(folder, "dupes.csv", "a,a,label\n" + _rows(30))
    return argv, ["dupes.csv", "duplicate column", "a"]


@case
def case_target_missing(folder):
    argv, path = _csv(folder, "notarget.csv", "a,b,lable\n" + _rows(30))
    return argv, ["notarget.csv", "'label'", "data.target", "did you mean 'lable'"]


@case
def case_one_class_target(folder):
    argv, path = _csv(folder, "oneclass.csv", "a,b,label\n" + _rows(30, classes=1))
    return argv, ["oneclass.csv", "'label'", "single class"]


@case
def case_val_label_unseen_in_train(folder):
    (folder / "train.csv").write_text("a,b,label\n" + _rows(30))
    (folder / "val.csv").write_text("a,b,label\n" + _rows(10) + "1,1,7\n")
    return _inspect(folder, "{train: train.csv, val: val.csv}"), ["val.csv", "[7]", "val split", "never in train"]


@case
def case_one_row_split(folder):
    (folder / "train.csv").write_text("a,b,label\n" + _rows(30))
    (folder / "val.csv").write_text("a,b,label\n1,2,0\n")
    return _inspect(folder, "{train: train.csv, val: val.csv}"), ["val.csv", "val split", "1 row"]


@case
def case_features_not_found(folder):
    argv, path = _csv(folder, "feat.csv", "a,b,label\n" + _rows(30), "{source: feat.csv, features: [a, c]}")
    return argv, ["feat.csv", "'c'", "data.features"]


@case
def case_too_many_categories(folder):
    rows = "".join(f"id{i},{i % 3},{i % 2}\n" for i in range(80))
    argv, path = _csv(folder, "ids.csv", "code,b,label\n" + rows, "{source: ids.csv, max_categories: 10}")
    return argv, ["ids.csv", "'code'", "data.max_categories", "data.features"]


@case
def case_date_column(folder):
    rows = "".join(f"2024-01-{i % 28 + 1:02d},{i % 3},{i % 2}\n" for i in range(40))
    argv, path = _csv(folder, "dates.csv", "day,b,label\n" + rows)
    return argv, ["dates.csv", "'day'", "date", "data.features"]


@case
def case_date_strings_other_format(folder):
    rows = "".join(f"{i % 28 + 1:02d}/03/2024 10:{i % 60:02d},{i % 3},{i % 2}\n" for i in range(40))
    argv, path = _csv(folder, "dates2.csv", "when,b,label\n" + rows)
    return argv, ["dates2.csv", "'when'", "date", "data.features"]


@case
def case_free_text_column(folder):
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "left", "quietly", "again"]
    rows = "".join(f"\"{' '.join(words[(i + k) % 11] for k in range(5 + i % 4))} #{i}\",{i % 3},{i % 2}\n"
                   for i in range(60))
    argv, path = _csv(folder, "text.csv", "comment,b,label\n" + rows)
    return argv, ["text.csv", "'comment'", "free text", "data.features"]


@case
def case_parquet_nested(folder):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"a": [[1, 2], [3], [4, 5]] * 10, "b": list(range(30)), "label": [0, 1, 0] * 10})
    pq.write_table(table, folder / "nested.parquet")
    return _inspect(folder, "{source: nested.parquet}"), ["nested.parquet", "'a'", "nested", "data.features"]


@case
def case_parquet_corrupt(folder):
    (folder / "broken.parquet").write_bytes(b"PAR1" + b"\x00" * 64)
    return _inspect(folder, "{source: broken.parquet}"), ["broken.parquet", "Parquet"]


# ----------------------------------------------------------------------------- arrays and images


@case
def case_npz_without_x_y(folder):
    np.savez(folder / "arrays.npz", features=np.zeros((10, 3)), labels=np.zeros(10))
    return _inspect(folder, "{source: arrays.npz}"), ["arrays.npz", "'x'", "'y'", "features, labels"]


@case
def case_npz_object_arrays(folder):
    # written by hand: np.savez would need pickle to store object arrays, and loading must never unpickle
    x = np.array([{"a": 1}, None] * 5, dtype=object)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, x, allow_pickle=True)
    with zipfile.ZipFile(folder / "objects.npz", "w") as z:
        z.writestr("x.npy", buf.getvalue())
        z.writestr("y.npy", _npy(np.zeros(10, np.int64)))
    return _inspect(folder, "{source: objects.npz}"), ["objects.npz", "pickle"]


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a)
    return buf.getvalue()


@case
def case_npz_not_a_zip(folder):
    (folder / "junk.npz").write_bytes(b"definitely not a zip archive")
    return _inspect(folder, "{source: junk.npz}"), ["junk.npz", "NPZ"]


@case
def case_npz_length_mismatch(folder):
    np.savez(folder / "mismatch.npz", x=np.zeros((10, 3), np.float32), y=np.zeros(9, np.int64))
    return _inspect(folder, "{source: mismatch.npz}"), ["mismatch.npz", "10 samples", "9"]


@case
def case_image_folder_non_images(folder):
    root = folder / "images"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"note{i}.txt").write_text("not an image")
            (root / cls / f"fake{i}.png").write_bytes(b"not a png either")
    return _inspect(folder, "{source: images}"), ["images", "no readable images", "non-image"]


@case
def case_image_folder_no_class_folders(folder):
    from PIL import Image

    root = folder / "flat"
    root.mkdir()
    for i in range(4):
        Image.new("L", (8, 8), color=i * 40).save(root / f"{i}.png")
    return _inspect(folder, "{source: flat}"), ["flat", "sub-folder per class"]


@case
def case_data_file_not_found(folder):
    return _inspect(folder, "{source: nowhere.csv}"), ["nowhere.csv", "not found", "data.source"]


@case
def case_unsupported_suffix(folder):
    (folder / "data.xlsx").write_bytes(b"PK\x03\x04")
    return _inspect(folder, "{source: data.xlsx}"), ["data.xlsx", "unsupported"]


# ----------------------------------------------------------------------------- configs


@case
def case_yaml_alias_bomb(folder):
    lines = ["name: bomb", "data: {source: builtin:iris}", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 12)]
    path = folder / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    return ["inspect", str(path), "--runs", str(folder / "runs")], ["bomb.yaml", "alias"]


@case
def case_yaml_not_a_mapping(folder):
    path = folder / "list.yaml"
    path.write_text("- name: x\n- data: y\n")
    return ["inspect", str(path), "--runs", str(folder / "runs")], ["list.yaml", "mapping"]


@case
def case_yaml_syntax_error(folder):
    path = folder / "syntax.yaml"
    path.write_text("name: x\ndata: {source: builtin:iris\n")
    return ["inspect", str(path), "--runs", str(folder / "runs")], ["syntax.yaml", "line", "invalid YAML"]


@case
def case_config_not_utf8(folder):
    path = folder / "latin.yaml"
    path.write_bytes("name: caf\u00e9\ndata: {source: builtin:iris}\n".encode("latin-1"))
    return ["inspect", str(path), "--runs", str(folder / "runs")], ["latin.yaml", "UTF-8"]


@case
def case_name_escapes_with_dotdot(folder):
    path = folder / "escape.yaml"
    path.write_text("name: ../x\ndata: {source: builtin:iris}\n")
    return ["inspect", str(path), "--runs", str(folder / "runs")], ["name", "runs folder", "../x"]


@case
def case_name_absolute_path(folder):
    path = folder / "absolute.yaml"
    path.write_text(f"name: {folder / 'elsewhere'}\ndata: {{source: builtin:iris}}\n")
    return ["inspect", str(path), "--runs", str(folder / "runs")], ["name", "runs folder", "elsewhere"]


@case
def case_name_escapes_via_override(folder):
    path = folder / "ok.yaml"
    path.write_text("name: ok\ndata: {source: builtin:iris}\n")
    return ["inspect", str(path), "--runs", str(folder / "runs"), "-o", "name=../../etc"], ["name", "runs folder"]


def escaped(folder: Path) -> list[Path]:
    """Anything a name-escape case managed to create outside the runs folder."""
    return [p for p in (folder / "x", folder / "elsewhere", folder.parent / "x", folder.parent.parent / "etc" / "inspect")
            if p.exists()]
