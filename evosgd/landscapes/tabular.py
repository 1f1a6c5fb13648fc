"""Real tables as finite-sum data: scikit-learn's bundled data sets and a user's own file, split into
train / validation / test per replicate and standardized on the training split.

Sources (``dataset``):

* a bundled scikit-learn data set, shipped inside the package (nothing is downloaded):
  ``digits`` (1797 8x8 images, 10 classes), ``breast_cancer`` (569, 2 classes), ``wine`` (178,
  3 classes), ``iris`` (150, 3 classes), ``diabetes`` (442, regression);
* a path to a ``.csv``, ``.parquet`` or ``.npy`` file (relative paths are resolved against the
  working directory; the file's SHA-256 goes into the landscape's provenance).  CSV and Parquet:
  ``target`` names the target column and ``features`` the feature columns (default: every other
  column).  ``.npy``: a 2-D numeric array; ``target`` is a column index (default the last column).

Splits.  Replicate r's split is a random permutation drawn from ``derive_seed(seed, "landscape",
r, "split")`` alone, so every optimizer of a scenario meets the same R splits (paired comparisons);
classification splits are stratified (each class keeps its share in every split, scikit-learn's
``train_test_split``).  Standardization: features (and a regression target) are centred and
scaled with the mean and standard deviation of the *training* split only, so nothing of the
held-out examples leaks into training.

Bad input is refused with a :class:`ConfigError` naming the key, what was given and what is
allowed: a missing file, an unknown column, a non-numeric column, NaN or infinite values, a class
with a single example (it cannot be both trained on and tested).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evosgd.core.errors import ConfigError
from evosgd.core.seeding import derive_seed

#: bundled scikit-learn data sets: name -> (loader name, task)
BUNDLED = {
    "digits": ("load_digits", "classification"),
    "breast_cancer": ("load_breast_cancer", "classification"),
    "wine": ("load_wine", "classification"),
    "iris": ("load_iris", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}
FILE_TYPES = (".csv", ".parquet", ".npy")
SPLITS = ("train", "validation", "test")


class TabularParams(BaseModel):
    """The data-set keys every real-data landscape shares."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("digits", description="a bundled scikit-learn data set (digits, breast_cancer, wine, iris, "
                                                "diabetes) or the path of a .csv, .parquet or .npy file")
    target: str | int | None = Field(None, description="target column: a name (CSV/Parquet) or an index (.npy); None = "
                                                        "the column named 'target', else the last column")
    features: list[str] | None = Field(None, description="feature columns of a CSV/Parquet file; None = every column but "
                                                          "the target")
    task: Literal["classification", "regression"] | None = Field(
        None, description="classification or regression; None = the bundled data set's task, or for a file the "
                    "task of the model kind (mlp_classifier: classification, mlp_regressor: regression)")
    validation_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share of the examples held out for validation")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of the examples held out for the test")
    standardize: bool = Field(True, description="centre and scale features (and a regression target) with training-split "
                                                "statistics")
    dataset_sha256: str | None = Field(None, description="SHA-256 of a data file, filled in when the scenario is read (the "
                                                          "file's content is then part of the run id and the manifest); a "
                                                          "given value must match the file")

    @model_validator(mode="after")
    def _hash_data_file(self) -> TabularParams:
        # the run id hashes the resolved parameters: with the file's digest among them, editing the
        # file makes new runs instead of resuming the old ones (a missing file is the loader's error)
        path = Path(self.dataset).expanduser()
        if self.dataset not in BUNDLED and path.is_file():
            digest = file_sha256(path)
            if self.dataset_sha256 is not None and self.dataset_sha256 != digest:
                raise ValueError(f"the file {self.dataset} now has SHA-256 {digest}, not the {self.dataset_sha256} given "
                                 "(the data changed since the scenario was resolved)")
            self.dataset_sha256 = digest
        return self


@dataclass
class Table:
    """A loaded table: features ``x [N, d]`` (float64), target ``y [N]`` (int64 classes or float64)."""

    x: np.ndarray
    y: np.ndarray
    task: str
    source: str
    feature_names: list[str]
    n_classes: int = 0
    sha256: str | None = None


@dataclass
class DataSplits:
    """Per-replicate train / validation / test sets: each a dict ``{"x": [R, n, d], "y": [R, n]
    (classes, int64) or [R, n, 1] (regression)}``; what a :class:`ModelLandscape` trains on."""

    train: dict[str, torch.Tensor]
    validation: dict[str, torch.Tensor] | None
    test: dict[str, torch.Tensor] | None
    task: str
    n_classes: int = 0
    info: dict = field(default_factory=dict)

    @property
    def features(self) -> int:
        return int(self.train["x"].shape[-1])

    def to(self, device: torch.device, dtype: torch.dtype) -> DataSplits:
        def move(s):
            if s is None:
                return None
            return {k: v.to(device, dtype if v.is_floating_point() else v.dtype) for k, v in s.items()}

        return DataSplits(move(self.train), move(self.validation), move(self.test), self.task, self.n_classes, self.info)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _bad(key: str, given, problem: str, allowed: str, where: str) -> ConfigError:
    return ConfigError(f"{where}.{key} = {given!r}: {problem}; allowed: {allowed}")


def _numeric(col: np.ndarray, name: str, key: str, where: str) -> np.ndarray:
    try:
        return np.asarray(col, dtype=np.float64)
    except (TypeError, ValueError):
        raise _bad(key, name, "the column is not numeric", "columns of numbers (encode categories as numbers first)",
                   where) from None


def load_table(p: TabularParams, where: str = "landscape") -> Table:
    """Read the table ``p.dataset`` names (see the module docstring); every refusal a ConfigError."""
    if p.dataset in BUNDLED:
        import sklearn.datasets as skd

        loader, task = BUNDLED[p.dataset]
        bunch = getattr(skd, loader)()
        if p.task is not None and p.task != task:
            raise _bad("task", p.task, f"{p.dataset!r} is a {task} data set", task, where)
        if p.target is not None or p.features is not None:
            raise _bad("target" if p.target is not None else "features", p.target if p.target is not None else p.features,
                       f"the bundled data set {p.dataset!r} has fixed columns", "leave target and features unset", where)
        x, y = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)
        names = [str(n) for n in getattr(bunch, "feature_names", [f"x{i}" for i in range(x.shape[1])])]
        return _finish(x, y, task, f"sklearn.datasets.{loader}", names, None, p, where)
    path = Path(p.dataset).expanduser()
    allowed_src = f"one of {', '.join(BUNDLED)}, or the path of an existing {', '.join(FILE_TYPES)} file"
    if path.suffix.lower() not in FILE_TYPES:
        raise _bad("dataset", p.dataset, "neither a bundled data set nor a supported file type", allowed_src, where)
    if not path.is_file():
        raise _bad("dataset", p.dataset, f"file not found (looked for {path.resolve()})", allowed_src, where)
    if p.task is None:
        raise _bad("task", None, "a data file needs its task", "'classification' or 'regression'", where)
    sha = p.dataset_sha256 or file_sha256(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise _bad("dataset", p.dataset, f"not a plain numeric .npy array ({e})", "a 2-D numeric array", where) from None
        if arr.ndim != 2 or arr.shape[1] < 2:
            raise _bad("dataset", p.dataset, f"array of shape {arr.shape}", "a 2-D array with >= 2 columns", where)
        if p.features is not None:
            raise _bad("features", p.features, "a .npy file has no column names", "leave features unset", where)
        tgt = -1 if p.target is None else p.target
        if not isinstance(tgt, int) or not -arr.shape[1] <= tgt < arr.shape[1]:
            raise _bad("target", p.target, "no such column", f"a column index in [0, {arr.shape[1]})", where)
        tgt %= arr.shape[1]
        arr = _numeric(arr, f"array of dtype {arr.dtype}", "dataset", where)
        x = np.delete(arr, tgt, axis=1)
        names = [f"x{i}" for i in range(arr.shape[1]) if i != tgt]
        return _finish(x, arr[:, tgt], p.task, str(path), names, sha, p, where)
    import pandas as pd

    try:
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except Exception as e:  # a parser's own message says what is wrong with the file
        raise _bad("dataset", p.dataset, f"cannot read it ({type(e).__name__}: {e})", f"a readable {suffix} file", where) from None
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    tgt = p.target if p.target is not None else ("target" if "target" in columns else columns[-1])
    if isinstance(tgt, int):
        raise _bad("target", tgt, "CSV/Parquet columns are named", f"one of {', '.join(columns)}", where)
    if tgt not in columns:
        raise _bad("target", tgt, "no such column in the file", f"one of {', '.join(columns)}", where)
    feats = p.features if p.features is not None else [c for c in columns if c != tgt]
    missing = [c for c in feats if c not in columns]
    if missing:
        raise _bad("features", missing, "no such column in the file", f"columns of {', '.join(columns)}", where)
    if tgt in feats or not feats:
        raise _bad("features", feats, "the features must be non-empty and must not contain the target",
                   f"columns other than {tgt!r}", where)
    x = np.stack([_numeric(frame[c].to_numpy(), c, "features", where) for c in feats], axis=1)
    y = frame[tgt].to_numpy()
    if p.task == "regression":
        y = _numeric(y, tgt, "target", where)
    return _finish(x, y, p.task, str(path), feats, sha, p, where)


def _finish(x: np.ndarray, y: np.ndarray, task: str, source: str, names: list[str], sha: str | None,
            p: TabularParams, where: str) -> Table:
    bad_rows = ~np.isfinite(x).all(axis=1)
    if task == "regression":
        y = np.asarray(y, dtype=np.float64)
        bad_rows |= ~np.isfinite(y)
    else:
        y_arr = np.asarray(y)
        if y_arr.dtype.kind == "f":
            bad_rows |= ~np.isfinite(y_arr)
        elif y_arr.dtype.kind == "O":
            bad_rows |= np.array([v is None or (isinstance(v, float) and v != v) for v in y_arr])
    if bad_rows.any():
        rows = np.flatnonzero(bad_rows)
        raise _bad("dataset", p.dataset, f"{len(rows)} row(s) hold NaN or infinite values (first data rows, counted from 0: "
                   f"{', '.join(str(int(i)) for i in rows[:5])})", "finite numbers only (drop or impute them first)", where)
    n_classes = 0
    if task == "classification":
        labels, y_int, counts = np.unique(np.asarray(y), return_inverse=True, return_counts=True)
        if len(labels) < 2:
            raise _bad("target", p.target, "classification needs at least two classes", "a column with >= 2 classes", where)
        lonely = [str(labels[i]) for i in np.flatnonzero(counts < 2)]
        if lonely:
            raise _bad("target", p.target if p.target is not None else "(default)",
                       f"class {', '.join(lonely)} has a single example (it cannot be split into train and held-out)",
                       "every class with >= 2 examples (drop or merge rare classes)", where)
        y, n_classes = y_int.astype(np.int64), len(labels)
    return Table(x, y, task, source, names, n_classes, sha)


def split_table(table: Table, *, replicates: int, seed: int, validation_fraction: float = 0.2,
                test_fraction: float = 0.2, standardize: bool = True, where: str = "landscape") -> DataSplits:
    """Replicate r's train / validation / test split from ``derive_seed(seed, "landscape", r,
    "split")`` (stratified for classification), standardized with the training split's statistics;
    float64 tensors ``[R, n, d]``."""
    from sklearn.model_selection import train_test_split

    n = len(table.y)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * validation_fraction))
    n_train = n - n_test - n_val
    if n_test < 1 or n_train < 2 or (validation_fraction > 0 and n_val < 1):
        raise _bad("test_fraction", test_fraction, f"{n} examples leave {n_train} for training, {n_val} for validation "
                   f"and {n_test} for the test", "fractions that leave >= 2 training and >= 1 held-out examples", where)
    strat = table.y if table.task == "classification" else None
    if strat is not None and min(n_test, n_val or n_test) < table.n_classes:
        # stratification puts one example of each class in each held-out split at least
        raise _bad("test_fraction", test_fraction, f"a held-out split smaller than the {table.n_classes} classes",
                   "larger fractions or a larger data set", where)
    parts: dict[str, list] = {s: [] for s in SPLITS}
    for r in range(replicates):
        rs = derive_seed(seed, "landscape", r, "split") % (2**32)
        idx = np.arange(n)
        rest, test = train_test_split(idx, test_size=n_test, random_state=rs, stratify=strat)
        if n_val:
            train, val = train_test_split(rest, test_size=n_val, random_state=rs + 1,
                                          stratify=None if strat is None else strat[rest])
        else:
            train, val = rest, rest[:0]
        x_tr = table.x[train]
        mu = x_tr.mean(0) if standardize else np.zeros(table.x.shape[1])
        sd = x_tr.std(0) if standardize else np.ones(table.x.shape[1])
        sd = np.where(sd > 0, sd, 1.0)  # a constant feature (a border pixel of digits) stays 0
        y = table.y.astype(np.float64) if table.task == "regression" else table.y
        y_mu, y_sd = (y[train].mean(), y[train].std() or 1.0) if table.task == "regression" and standardize else (0.0, 1.0)
        for name, rows in zip(SPLITS, (train, val, test)):
            xs = torch.from_numpy((table.x[rows] - mu) / sd)
            if table.task == "regression":
                ys = torch.from_numpy((y[rows] - y_mu) / y_sd).unsqueeze(-1)
            else:
                ys = torch.from_numpy(table.y[rows]).long()
            parts[name].append({"x": xs, "y": ys})
    stacked = {s: {k: torch.stack([p[k] for p in parts[s]]) for k in ("x", "y")} for s in SPLITS}
    info = {"source": table.source, "sha256": table.sha256, "task": table.task, "examples": n,
            "train": n_train, "validation": n_val, "test": n_test, "features": int(table.x.shape[1]),
            "classes": table.n_classes}
    return DataSplits(stacked["train"], stacked["validation"] if n_val else None, stacked["test"], table.task,
                      table.n_classes, info)


def splits_from_params(p: TabularParams, *, replicates: int, seed: int, where: str = "landscape") -> DataSplits:
    """Load ``p.dataset`` and split it (the path of every registered real-data landscape)."""
    table = load_table(p, where)
    return split_table(table, replicates=replicates, seed=seed, validation_fraction=p.validation_fraction,
                       test_fraction=p.test_fraction, standardize=p.standardize, where=where)


def splits_from_arrays(x, y, *, task: str, replicates: int, seed: int, validation_fraction: float = 0.2,
                       test_fraction: float = 0.2, standardize: bool = True) -> DataSplits:
    """A plugin's own arrays ``x [N, d]``, ``y [N]`` split like a table (same checks, same seeds)."""
    p = TabularParams(dataset="<arrays>", task=task, validation_fraction=validation_fraction,
                      test_fraction=test_fraction, standardize=standardize)
    xa = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    ya = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
    if xa.ndim == 1:
        xa = xa[:, None]
    table = _finish(xa, ya, task, "<arrays>", [f"x{i}" for i in range(xa.shape[1])], None, p, "dataset")
    return split_table(table, replicates=replicates, seed=seed, validation_fraction=validation_fraction,
                       test_fraction=test_fraction, standardize=standardize, where="dataset")
