"""The serial experiment's results as a Markdown table and a grid of heatmaps."""

from __future__ import annotations

import math
from pathlib import Path

from ponder.experiments.serial import SETTINGS, TASKS
from ponder.train.checkpoint import write_text_atomic

DESCRIBE = {"s5": "composing permutations of 5, left to right", "modadd": "a sum of terms mod 7",
            "isq": "squaring n times mod a prime (23-89)", "cvp": "a chain of and/or/xor/not gates"}


def _axes(records: list[dict]) -> tuple[list[str], list[str]]:
    tasks = sorted({r["task"] for r in records}, key=lambda t: (TASKS.index(t) if t in TASKS else 99, t))
    settings = [s for s in SETTINGS if any(r["setting"] == s for r in records)]
    return tasks, settings


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown(records: list[dict], command: str = "") -> str:
    """One table per task: a row per (length, depth), a column per setting."""
    lines = ["# Chain of thought on serial problems", ""]
    commands = list(dict.fromkeys([r["command"] for r in records if r.get("command")] or [command]))
    if any(commands):
        lines += ["```", *[c for c in commands if c], "```", ""]
    if not records:
        return "\n".join(lines + ["No finished cells yet.", ""])
    trainings = {tuple(sorted(r["training"].items())) for r in records}
    t = records[0]["training"]
    lines += [
        f"Every cell trains a fresh Llama (hidden {t['hidden']}, {t['heads']} heads, MLP {t['ffn']}; "
        f"the depth is the table's `layers`) on problems of one exact input length (isq: every length up to "
        f"it, see `training_mixture`), for {t['train_tokens']:,} training tokens at learning rate "
        f"{t['learning_rate']:g}, then answers held-out problems of that length greedily (exact match). "
        "A token is one position of a training sequence, prompt plus completion, padding excluded: "
        f"every setting reads the same number of tokens, in steps of about {t.get('batch_tokens', 0):,} tokens "
        "(so about the same number of steps), and **cot, whose sequences are longer, sees fewer "
        "problems** than base and hint (the `problems seen` column). "
        "**base** answers at once; **cot** writes one intermediate result per input item first; "
        "**hint** answers at once but is trained to predict each intermediate result at its input item's "
        "position, never fed back. isq has no hint: its question gives the number of squarings as a number.",
        "",
    ]
    if t.get("item_tokens") or t.get("trace") == "short":
        lines += [
            ("Each permutation, each number from 10 to 99 and each two-letter wire name is one token; every "
             "other character is one token. " if t.get("item_tokens") else "")
            + ("The cot traces of s5, modadd and isq are the short ones: one line per step, `21354` "
               "(the running permutation), `3=5` (the term, the running sum) and `47^2 mod 59=26`, so a "
               "step finds its operands a fixed number of positions back. cvp's trace is "
               "`d=1|0=1` (the gate with its operands' values)." if t.get("trace") == "short" else ""),
            "",
        ]
    if len(trainings) > 1:
        lines += ["(Cells were trained with different settings; each record in results.json has its own.)", ""]
    tasks, settings = _axes(records)
    by = {(r["task"], r["length"], r["depth"], r["setting"]): r for r in records}
    for task in tasks:
        rows = sorted({(r["length"], r["depth"]) for r in records if r["task"] == task})
        chance = next(r["chance"] for r in records if r["task"] == task)
        lines += [f"## {task}: {DESCRIBE.get(task, task)} (chance {_pct(chance)})", ""]
        head = ["length", "layers", *settings, "test problems", "problems seen (" + " / ".join(settings) + ")"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
        for length, depth in rows:
            cells = [by.get((task, length, depth, s)) for s in settings]
            acc = [f"{_pct(c['accuracy'])}" if c else "n/a" for c in cells]
            n_test = max((c["n_test"] for c in cells if c), default=0)
            seen = " / ".join(f"{c['train_examples']:,}" if c else "n/a" for c in cells)
            lines.append("| " + " | ".join([str(length), str(depth), *acc, str(n_test), seen]) + " |")
        lines.append("")
    lines.append("Chance is 1 / the number of possible answers; every family draws its answers uniformly.")
    if "isq" in tasks:
        lines.append("isq has 544 questions at any one length (a base and one of nine primes), of which about 34 "
                     "are held out, so its accuracies move in steps of about 3 points.")
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, records: list[dict], command: str = "") -> None:
    write_text_atomic(path, markdown(records, command))


def write_heatmaps(path: Path, records: list[dict]) -> Path | None:
    """A panel per task and setting: accuracy over input length (x) and layers (y)."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks, settings = _axes(records)
    lengths = sorted({r["length"] for r in records})
    depths = sorted({r["depth"] for r in records})
    by = {(r["task"], r["length"], r["depth"], r["setting"]): r for r in records}
    chances = {r["task"]: r["chance"] for r in records}
    panel_w, panel_h = max(2.0, 0.8 + 0.55 * len(lengths)), max(1.7, 0.9 + 0.4 * len(depths))
    fig, axes = plt.subplots(len(tasks), len(settings), squeeze=False, layout="constrained",
                             figsize=(0.9 + panel_w * len(settings), 0.3 + panel_h * len(tasks)))
    image = None
    for i, task in enumerate(tasks):
        for j, setting in enumerate(settings):
            ax = axes[i][j]
            grid = np.full((len(depths), len(lengths)), math.nan)
            for a, d in enumerate(depths):
                for b, n in enumerate(lengths):
                    r = by.get((task, n, d, setting))
                    grid[a, b] = r["accuracy"] if r is not None else math.nan
            image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
            for a in range(len(depths)):
                for b in range(len(lengths)):
                    v = grid[a, b]
                    ax.text(b, a, "n/a" if math.isnan(v) else f"{100 * v:.0f}", ha="center", va="center",
                            fontsize=8, color="black" if not math.isnan(v) and v > 0.6 else "white")
            ax.set_facecolor("0.75")
            ax.set_xticks(range(len(lengths)), [str(n) for n in lengths], fontsize=8)
            ax.set_yticks(range(len(depths)), [str(d) for d in depths], fontsize=8)
            ax.set_title(f"{task} · {setting} (chance {100 * chances[task]:.2g}%)", fontsize=9)
            if i == len(tasks) - 1:
                ax.set_xlabel("input length", fontsize=8)
            if j == 0:
                ax.set_ylabel("layers", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="held-out accuracy")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
