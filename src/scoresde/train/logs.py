"""Training logs on rank 0: a CSV file, TensorBoard scalars and a progress bar."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_text

__all__ = ["TrainLogger", "read_metrics", "last_row", "CSV_FIELDS"]

CSV_FIELDS = ("step", "loss", "lr", "grad_norm", "it_per_s", "seconds")
"""Columns of ``metrics.csv``; ``seconds`` is the run's wall time at the row, cumulative over
resumed calls (a resumed run continues from the time saved in its checkpoint)."""


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Read a ``metrics.csv`` written by the trainer into a list of rows (numbers as floats)."""
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def last_row(path: str | Path, step: int) -> dict[str, float] | None:
    """The last row of ``metrics.csv`` at or before ``step``; ``None`` if there is none."""
    try:
        rows = [r for r in read_metrics(path) if r["step"] <= step]
    except (OSError, ValueError, KeyError, TypeError):  # no file, or not one the trainer wrote
        return None
    return rows[-1] if rows else None


class TrainLogger:
    """Writes ``metrics.csv`` and TensorBoard scalars and drives a tqdm bar (rank 0 only).

    On resume from step ``start``, rows after ``start`` (written before the interruption, and
    about to be redone) are dropped from the CSV, and TensorBoard purges its events after it.
    With ``reopen`` the row *at* ``start`` goes too: the checkpoint carried the steps it averaged
    (an earlier run's last row, off the ``log_every`` grid) into the resumed run's first row.
    """

    def __init__(
        self,
        out: Path,
        *,
        start: int,
        total: int,
        tensorboard: bool = True,
        progress: bool = True,
        enabled: bool = True,
        reopen: bool = False,
    ) -> None:
        self.enabled = enabled
        self.csv_path = out / "metrics.csv"
        self.writer: Any = None
        self.bar: Any = None
        if not enabled:
            return
        self._truncate(start if not reopen else start - 1)
        self._fh = open(self.csv_path, "a", newline="")
        self._csv = csv.DictWriter(self._fh, fieldnames=CSV_FIELDS)
        if self._fh.tell() == 0:
            self._csv.writeheader()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # events at steps >= purge_step are hidden: keep the row at ``start`` unless reopened
            purge = start if reopen else start + 1
            self.writer = SummaryWriter(str(out / "tb"), purge_step=purge if start else None)
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total,
                initial=start,
                desc="train",
                unit="it",
                dynamic_ncols=True,
                file=sys.stderr,
            )

    def _truncate(self, start: int) -> None:
        if not self.csv_path.exists():
            return
        rows = [r for r in read_metrics(self.csv_path) if r["step"] <= start]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (int(r[k]) if k == "step" else r[k]) for k in CSV_FIELDS})
        atomic_write_text(self.csv_path, buf.getvalue())

    def advance(self, n: int = 1) -> None:
        """Move the progress bar by ``n`` steps."""
        if self.bar is not None:
            self.bar.update(n)

    def log(self, row: dict[str, float]) -> None:
        """Record one row of :data:`CSV_FIELDS` values."""
        if not self.enabled:
            return
        self._csv.writerow({k: row[k] for k in CSV_FIELDS})
        self._fh.flush()
        step = int(row["step"])
        if self.writer is not None:
            for key in ("loss", "lr", "grad_norm", "it_per_s"):
                self.writer.add_scalar(f"train/{key}", row[key], step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{row['loss']:.4g}", refresh=False)

    def message(self, text: str) -> None:
        """Print a line without breaking the progress bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        """Flush and close everything."""
        if not self.enabled:
            return
        self._fh.close()
        if self.writer is not None:
            self.writer.close()
        if self.bar is not None:
            self.bar.close()
