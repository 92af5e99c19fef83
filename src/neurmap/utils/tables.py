"""Result tables shared by the evaluation command and the sweep collector: rows are dicts, columns are the
union of their keys in first-seen order, floats print with 4 decimals."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neurmap.utils.files import atomic_write

__all__ = ["columns", "to_markdown", "write_csv"]


def columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every key of ``rows``, in the order they first appear."""
    names: list[str] = []
    for row in rows:
        names += [k for k in row if k not in names]
    return names


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of ``rows`` (floats with 4 decimals, missing cells empty)."""
    names = columns(rows)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows:
        cells = [f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``rows`` as a CSV file with a header, written atomically (parent folders are created)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns(rows))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue())
