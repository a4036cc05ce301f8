"""The data-kind interface: how one kind of data (tables, images, text) is read, split, encoded and
fingerprinted, which data checks inspect runs on it, and which pictures and report it leaves.

A new kind is one module with one `DataKind` subclass, registered with `@register` (recipe/data/kinds/
registry.py); its checks are `DataCheck`s it lists, and the catalog entries of check ids it adds go in `specs`.
Nothing in the stages changes: `recipe.data.load` asks the registry which kind reads the config's source, and
`recipe inspect` runs the checks that kind declares, in the order it declares them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from recipe import checks as C

if TYPE_CHECKING:
    from recipe.data.dataset import Dataset
    from recipe.data.kinds.look import Look


@dataclass(frozen=True)
class DataCheck:
    """One data check a kind declares: its catalog id and the function that judges, `judge(look, thresholds)`."""

    id: str
    judge: Callable[["Look", dict[str, Any]], C.Check]
    # a model-fitting probe (sklearn): runs on inspect's side thread with one BLAS thread, beside the others
    probe: bool = False
    # (check id, what its failure means): when that check fails, this one is a skip that says so
    needs: Optional[tuple[str, str]] = None


def spec(check_id: str, catches: str, statuses: str, refs: str = "", **thresholds: Any) -> C.Spec:
    """A catalog entry for a check a kind adds (inspect's stage): what it catches, the statuses it can return."""
    order = sorted(statuses.split(), key=C.STATUS_ORDER.__getitem__)
    return C.Spec(check_id, "inspect", catches, tuple(refs.split()), thresholds, tuple(order))


class DataKind:
    """One kind of data. `load` returns a `Dataset` (or a subclass: a text kind holds token windows instead of
    feature matrices) whose test split is sealed; everything inspect does with it is asked of the kind."""

    name: ClassVar[str]
    priority: ClassVar[int] = 0               # kinds of higher priority are asked first whether they claim a source
    specs: ClassVar[tuple[C.Spec, ...]] = ()  # catalog entries of the check ids this kind adds

    # ------------------------------------------------------------------ which kind reads a config

    def claims(self, cfg) -> bool:
        """Whether this kind reads cfg.data's source (decided before anything is read: path, suffix, keys)."""
        return False

    def fits(self, ds: "Dataset") -> bool:
        """For a kind that refines the kind it subclasses (images of tables): whether loaded data is of this kind."""
        return False

    # ------------------------------------------------------------------ read, split, encode, fingerprint

    def load(self, cfg) -> "Dataset":
        """Read, split, encode with statistics from train only and fingerprint; the test split sealed inside."""
        parts = self.split(cfg)
        ds = self.encode(parts, cfg)
        ds.fingerprint = self.fingerprint(ds)
        return ds

    def read(self, cfg, source: str) -> Any:
        """One source as this kind holds it before splitting (a Table for tables and images)."""
        raise NotImplementedError

    def split(self, cfg) -> dict[str, Any]:
        """The train/val/test parts: given files, or a seeded split of one source (never interleaving what the
        kind keeps together: a document, a group)."""
        raise NotImplementedError

    def encode(self, parts: dict[str, Any], cfg) -> "Dataset":
        """The Dataset the network reads, with every learned statistic (levels, medians, normalization,
        vocabulary) taken from parts["train"] only."""
        raise NotImplementedError

    def fingerprint(self, ds: "Dataset") -> str:
        """Content hash of the loaded splits: the gate compares it, so it must not change for unchanged data."""
        raise NotImplementedError

    # ------------------------------------------------------------------ what inspect runs and draws

    def checks(self) -> list[DataCheck]:
        """The data checks inspect runs on this kind, in the order the record lists them."""
        raise NotImplementedError

    def pictures(self, look: "Look") -> list[str]:
        """Pictures drawn from the data alone, on a side thread while the checks run; returns their file names."""
        return []

    def finish_pictures(self, look: "Look", drawn: list[str]) -> list[str]:
        """After the checks: pictures of their findings (look.found), placed among `drawn`; the final list."""
        return drawn

    def report(self, look: "Look") -> dict[str, Any]:
        """data_report.json: what later stages read (priors or target statistics, sizes, fingerprint)."""
        raise NotImplementedError

    def outcome(self, look: "Look", report: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """inspect's metrics and one-line summary."""
        raise NotImplementedError
