"""Draw a run's metrics.jsonl to PNG: loss, learning rate, throughput, eval accuracy; for RL runs also
reward, accuracy and completion length on one page. Several runs: their held-out accuracy against
training time in one plot, so trainers given the same time budget are compared where it matters."""

from __future__ import annotations

from pathlib import Path

from ponder import PonderError
from ponder.train.metrics import read_metrics


def _series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in records if key in r and isinstance(r[key], (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _run_records(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        raise PonderError(f"no metrics.jsonl in {run}: is it a run directory?")
    records = read_metrics(path)
    if not records:
        raise PonderError(f"{path} has no metrics yet")
    return records


def plot_run(run_dir: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run_dir)
    records = _run_records(run)
    keys = sorted({k for r in records for k, v in r.items() if k != "step" and isinstance(v, (int, float))})
    scalar = [k for k in keys if "/" not in k]
    grouped: dict[str, list[str]] = {}
    for k in keys:
        if "/" in k:
            grouped.setdefault(k.split("/", 1)[0], []).append(k)
    out_dir = run / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    for k in scalar:
        xs, ys = _series(records, k)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(xs, ys)
        ax.set_xlabel("step")
        ax.set_ylabel(k)
        if k == "loss" and ys and min(ys) > 0:
            ax.set_yscale("log")
        ax.set_title(f"{run.name}: {k}")
        ax.grid(alpha=0.3)
        written.append(_save(fig, out_dir / f"{k}.png"))
    for group, ks in grouped.items():
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in ks:
            xs, ys = _series(records, k)
            ax.plot(xs, ys, marker=".", label=k.split("/", 1)[1])
        ax.set_xlabel("step")
        ax.set_ylabel(group)
        ax.set_title(f"{run.name}: {group}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        written.append(_save(fig, out_dir / f"{group.replace('/', '_')}.png"))
    if {"reward", "accuracy", "completion_length"} <= set(scalar):
        written.append(_rl_summary(run, records, out_dir))
    return written


def eval_by_time(records: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """Each held-out key's accuracy against training minutes: the trainer's own `seconds` (sampling and
    updates, evaluations excluded) as last logged at or before the evaluation."""
    seconds, curves = 0.0, {}
    for r in records:
        seconds = r.get("seconds", seconds)
        for k, v in r.items():
            if k.startswith("eval/") and isinstance(v, (int, float)):
                xs, ys = curves.setdefault(k[5:], ([], []))
                xs.append(seconds / 60)
                ys.append(v)
    return curves


def plot_compare(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Held-out accuracy of several runs against training minutes, one line per run and eval key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for run in map(Path, run_dirs):
        curves = eval_by_time(_run_records(run))
        if not curves:
            raise PonderError(f"{run / 'metrics.jsonl'} has no held-out evaluations (eval/...) to compare")
        for key, (xs, ys) in sorted(curves.items()):
            ax.plot(xs, ys, marker=".", label=run.name if len(curves) == 1 else f"{run.name} {key}")
    ax.set_xlabel("training minutes (sampling and updates)")
    ax.set_ylabel("held-out accuracy (greedy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, Path(out))


def _rl_summary(run: Path, records: list[dict], out_dir: Path) -> Path:
    """An RL run's story on one page: reward, accuracy (training batches and held-out evals), length."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, key in zip(axes, ("reward", "accuracy", "completion_length")):
        ax.plot(*_series(records, key), label="training batches", alpha=0.8)
        if key == "accuracy":
            for k in sorted({k for r in records for k in r if k.startswith("eval/")}):
                ax.plot(*_series(records, k), marker="o", label=f"held-out {k[5:]}")
            ax.legend(fontsize=7)
        ax.set_xlabel("step")
        ax.set_title(key.replace("_", " "))
        ax.grid(alpha=0.3)
    fig.suptitle(run.name)
    return _save(fig, out_dir / "rl_summary.png")


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
