"""Metrics as one JSON line per log step, and a progress bar that shows them."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm


class MetricsLog:
    """Append-only JSONL; on resume, lines past the checkpoint are dropped so none repeat."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and _step_of(line) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self._fh = open(self.path, "a")

    def log(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62


def read_metrics(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a kill is skipped, not fatal
    return out


def progress(total: int, initial: int, desc: str) -> tqdm:
    """A step bar with rate and ETA; quiet when stderr is not a terminal and CI is set."""
    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                file=sys.stderr, mininterval=1.0, smoothing=0.05)


def fit_to_time_budget(bar: tqdm, done: int, seconds: float, max_time_minutes: float | None, limit: int) -> None:
    """A run with a time budget ends when the budget is spent, usually long before its step `limit`:
    project the last step from the training time per step so far, so the bar's total and ETA are true."""
    if not max_time_minutes or done <= 0 or seconds <= 0:
        return
    left = max(0.0, max_time_minutes * 60 - seconds)
    projected = min(limit, done + math.ceil(left / (seconds / done)))
    if projected != bar.total:
        bar.total = projected
        bar.refresh()
