"""Per-example scores of every evaluation of a run, stored compactly beside ``results.json``.

The accuracy matrix keeps one mean per (row, column). Confidence intervals and paired comparisons
need the scores behind each mean, so the runner also keeps, for every column ``c`` (trained tasks,
then probes), an array of shape ``(T+1, n_c)``: row ``t`` holds the score of each of the column's
``n_c`` test examples after training task ``t`` (row 0 = before training), in the test set's own
order, which the benchmark fixes (its split seed does not depend on the run seed), so every seed
and every strategy of a benchmark version scores the same examples in the same order.

File ``examples.npz`` (a zip of ``.npy`` arrays that ``numpy.load`` reads):

    version    int64 [1]            format version (1)
    evaluated  uint8 [T+1]          1 where the row has been evaluated
    sizes      int64 [C]            test examples per column
    binary     uint8 [C]            1 where every stored score of the column is 0 or 1
    col_0000   uint8 [T+1, ⌈n/8⌉]   binary column: ``numpy.packbits`` of each row (big-endian bits)
               float16 [T+1, n]     other columns (ROUGE-L, SARI, ...): scores rounded to float16

Unevaluated rows are zeros. A 5-task run over 2,000 test examples per task takes about 8 KB.
The file is written atomically with fixed zip timestamps, so equal scores give equal bytes: a
run that was killed and resumed ends with the same file as one that was not. numpy only (no torch),
so reports can read it.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clbench.errors import ResultsError
from clbench.safeio import write_bytes_atomic

EXAMPLES_FILE = "examples.npz"
FORMAT_VERSION = 1
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class ExampleScores:
    """Per-example scores of one run: ``rows[t][c]`` is a float32 vector, or ``None`` before row t is evaluated."""

    def __init__(self, n_rows: int, n_columns: int) -> None:
        if n_rows < 2 or n_columns < 1:
            raise ValueError(f"need at least 2 rows and 1 column, got {n_rows} x {n_columns}")
        self.n_rows = n_rows
        self.n_columns = n_columns
        self.rows: list[list[np.ndarray] | None] = [None] * n_rows

    # ---- filling -------------------------------------------------------------------------------
    def set_row(self, row: int, scores: Sequence[Any]) -> None:
        """Store one evaluation pass: one score vector per column, sizes equal to earlier rows'."""
        if len(scores) != self.n_columns:
            raise ValueError(f"row {row}: {len(scores)} score vectors for {self.n_columns} columns")
        arrays = [np.asarray(s, dtype=np.float32).reshape(-1) for s in scores]
        sizes = self.sizes()
        if sizes is not None and [len(a) for a in arrays] != sizes:
            raise ValueError(f"row {row}: column sizes {[len(a) for a in arrays]} differ from earlier rows' {sizes}")
        self.rows[row] = arrays

    def keep_rows(self, count: int) -> None:
        """Forget every row from ``count`` on (a resumed run re-evaluates them)."""
        for row in range(max(count, 0), self.n_rows):
            self.rows[row] = None

    # ---- reading -------------------------------------------------------------------------------
    def sizes(self) -> list[int] | None:
        """Test examples per column, or ``None`` while no row is stored."""
        first = next((r for r in self.rows if r is not None), None)
        return None if first is None else [len(a) for a in first]

    def evaluated(self) -> list[bool]:
        return [r is not None for r in self.rows]

    def is_complete(self) -> bool:
        return all(self.evaluated())

    def column(self, c: int) -> np.ndarray:
        """Column ``c`` as a float array ``(T+1, n_c)``; NaN rows where not evaluated."""
        sizes = self.sizes()
        if sizes is None:
            raise ValueError("no row has been stored")
        out = np.full((self.n_rows, sizes[c]), np.nan, dtype=np.float64)
        for t, row in enumerate(self.rows):
            if row is not None:
                out[t] = row[c]
        return out

    def columns(self, count: int | None = None) -> list[np.ndarray]:
        """The first ``count`` columns (all by default) as ``(T+1, n_c)`` arrays."""
        return [self.column(c) for c in range(self.n_columns if count is None else count)]

    def means(self) -> list[list[float] | None]:
        """Each evaluated row's per-column mean (what the accuracy matrix holds)."""
        return [None if r is None else [float(a.mean()) if len(a) else float("nan") for a in r] for r in self.rows]

    def summary(self) -> dict[str, Any]:
        """What ``results.json`` records about the file."""
        sizes = self.sizes() or []
        return {"file": EXAMPLES_FILE, "format": FORMAT_VERSION, "rows_evaluated": sum(self.evaluated()), "sizes": sizes,
                "encodings": ["bits" if b else "float16" for b in self._binary()] if sizes else []}

    def _binary(self) -> list[bool]:
        stored = [r for r in self.rows if r is not None]
        return [all(bool(np.all((row[c] == 0) | (row[c] == 1))) for row in stored) for c in range(self.n_columns)]

    # ---- files ---------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays the file holds, by name (see the module docstring)."""
        sizes = self.sizes()
        if sizes is None:
            raise ValueError("no row has been stored")
        binary = self._binary()
        out = {"version": np.array([FORMAT_VERSION], dtype=np.int64),
               "evaluated": np.array(self.evaluated(), dtype=np.uint8),
               "sizes": np.array(sizes, dtype=np.int64),
               "binary": np.array(binary, dtype=np.uint8)}
        for c, n in enumerate(sizes):
            values = np.zeros((self.n_rows, n), dtype=np.float32)
            for t, row in enumerate(self.rows):
                if row is not None:
                    values[t] = row[c]
            out[f"col_{c:04d}"] = np.packbits(values > 0.5, axis=1) if binary[c] else values.astype(np.float16)
        return out

    def to_bytes(self) -> bytes:
        """The file's bytes: a zip of ``.npy`` arrays with fixed timestamps (equal scores, equal bytes)."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, array in self.arrays().items():
                member = io.BytesIO()
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3
                info.external_attr = 0o644 << 16
                archive.writestr(info, member.getvalue())
        return buffer.getvalue()

    def save(self, path: Path) -> None:
        """Write the file atomically (temp file, fsync, rename; :mod:`clbench.safeio`) with deterministic bytes.

        Raises:
            StorageError: the disk is full or the write failed; ``path`` keeps its old content.
        """
        write_bytes_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: Path) -> ExampleScores:
        """Read a file written by :meth:`save`.

        Raises:
            ResultsError: unreadable, unknown version or inconsistent arrays (naming the file).
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except FileNotFoundError:
            raise ResultsError(f"{path}: no such per-example scores file") from None
        except Exception as exc:  # noqa: BLE001 - damaged bytes surface as zlib, zipfile, numpy or OS errors alike
            raise ResultsError(f"{path}: not a readable per-example scores file ({type(exc).__name__}: {str(exc)[:160]})") from None
        try:
            version = int(arrays["version"][0])
            if version != FORMAT_VERSION:
                raise ResultsError(f"{path}: per-example scores format {version} is not {FORMAT_VERSION}")
            evaluated = arrays["evaluated"].astype(bool)
            sizes = [int(n) for n in arrays["sizes"]]
            binary = arrays["binary"].astype(bool)
            scores = cls(len(evaluated), len(sizes))
            columns = []
            if len(binary) != len(sizes) or any(n < 0 for n in sizes):
                raise ValueError(f"{len(binary)} column encodings and sizes {sizes} do not fit")
            for c, n in enumerate(sizes):
                stored = arrays[f"col_{c:04d}"]
                if stored.ndim != 2 or (binary[c] and stored.shape[1] != -(-n // 8)):
                    raise ValueError(f"column {c} has shape {stored.shape}, expected {len(evaluated)} rows of {n} scores")
                values = np.unpackbits(stored, axis=1, count=n).astype(np.float32) if binary[c] else stored.astype(np.float32)
                if values.shape != (len(evaluated), n):
                    raise ValueError(f"column {c} has shape {values.shape}, expected {(len(evaluated), n)}")
                columns.append(values)
        except ResultsError:
            raise
        except (KeyError, IndexError, ValueError, TypeError, OverflowError) as exc:
            raise ResultsError(f"{path}: malformed per-example scores file ({exc})") from None
        for t in np.flatnonzero(evaluated):
            scores.rows[int(t)] = [col[t].copy() for col in columns]
        return scores


def matches_matrix(scores: ExampleScores, values: Sequence[Sequence[float | None] | None], tolerance: float = 2e-3) -> bool:
    """Whether every evaluated row's per-example means equal the accuracy matrix's values.

    ``tolerance`` covers float16 rounding of non-binary scores; a file from another run (or a
    stale one) fails this check, and reports then treat its intervals as unavailable.
    """
    if len(values) != scores.n_rows:
        return False
    for row, means in zip(values, scores.means(), strict=True):
        if row is None or means is None:
            if (row is None) != (means is None):
                return False
            continue
        if len(row) != len(means):
            return False
        for v, m in zip(row, means, strict=True):
            if v is None or not np.isfinite(m) or abs(float(v) - m) > tolerance:
                return False
    return True
