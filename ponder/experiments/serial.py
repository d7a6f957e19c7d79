"""`ponder experiment serial`: chain of thought lets shallow transformers solve serial problems.

A laptop-scale run of the experiments behind the expressivity result for chain
of thought on serial problems (ICLR 2024): a transformer of constant depth
that answers at once can only solve highly parallel problems, while one that
writes its intermediate results first can solve serial ones. For each task
family, input length, depth and setting (a *cell*) a fresh small Llama is
trained through the project's own trainer (`train_sft`) on problems of that
exact length, then answers held-out problems greedily:

- **base**: answer directly (an empty think block);
- **cot**: write the trace, one intermediate result per input item, then answer;
- **hint**: answer directly, with each intermediate result supervised at its
  input item's position but never fed back (`experiments/hints.py`).

Token budget: every cell trains on the same number of tokens, counting every
position of a training sequence (prompt + completion, padding excluded), i.e.
what the model reads. A cot sequence is longer, so cot sees fewer problems
than base and hint, which see the same problems; records give both counts.
This is the conservative choice for cot: base never lacks data by comparison.
Every optimizer step reads about `batch_tokens` tokens (fewer examples per
batch for cot), so the settings also take about the same number of steps on
the same learning-rate schedule.

How a step is laid out decides what one layer can learn. With one token per
character and the readable traces, a step copies its input item from ever
further back in the question, and an s5 step is two chained lookups per digit.
So by default every permutation, number and two-letter wire name is one token
(`item_tokens`) and s5, modadd and isq write their short traces (`trace`,
see `tasks/serial.py`): each line reads the line before and its input item a
fixed number of positions back, as in the published experiments. Even then a
step's result says nothing about either operand alone (a group product), so
training sits on a loss plateau until attention finds both at once; many
small steps get off it sooner than the same tokens in large ones.

`isq` runs in base and cot only (see `hints.py`), over the primes in `ISQ_MODULI`, and trains on every
length up to the cell's (`training_mixture`): at one length a question is just a base and a modulus
(544 of them, about 34 held out), so a held-out question starts with a squaring no training question of
that length shows.

Each cell is written to `results.json` as it finishes; a rerun skips finished
cells whose training settings match, so a killed sweep resumes.
"""

from __future__ import annotations

import itertools
import json
import random
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import torch

from ponder import PonderError
from ponder.experiments.hints import has_hints, hint_targets
from ponder.model.configs import sized_name
from ponder.tasks import Problem
from ponder.tasks.cvp import CVP, wire_names
from ponder.tasks.serial import TRACES
from ponder.train.checkpoint import write_text_atomic
from ponder.train.data import draw_problem, parse_mixture
from ponder.train.metrics import progress, read_metrics

TASKS = ("modadd", "s5", "isq", "cvp")
SETTINGS = ("base", "cot", "hint")
# Primes below 100 whose squaring cycles are at least 10 long (mod 97 they are at most 2: see ISq).
ISQ_MODULI = (23, 47, 53, 59, 67, 71, 79, 83, 89)
OPTIONS = {"isq": {"modulus": list(ISQ_MODULI)}, "modadd": {"modulus": 7}}
SHORT_TRACES = ("s5", "modadd", "isq")  # the families with a `trace="short"` option
MAX_CONTEXT = 4096  # positions; a length whose reference example does not fit is refused


def item_words(task: str, length: int) -> list[str]:
    """The whole words that are one token each with `item_tokens`: a permutation, a number, a wire name.

    modadd needs none (its numbers are digits), nor cvp up to 22 gates (one-letter names).
    """
    if task == "s5":
        return ["".join(p) for p in itertools.permutations("12345")]
    if task == "isq":
        return [str(i) for i in range(10, 100)]  # moduli, values and squaring counts below 100
    if task == "cvp" and CVP.name_width(length) > 1:
        return wire_names(length + CVP.max_inputs, 2)
    return []


@dataclass(frozen=True)
class Cell:
    task: str
    length: int
    depth: int
    setting: str

    @property
    def key(self) -> str:
        return f"{self.task}/{self.length}/{self.depth}/{self.setting}"


@dataclass(frozen=True)
class SweepSpec:
    """What to sweep and how every cell trains (the same for all cells)."""

    tasks: tuple[str, ...] = TASKS
    lengths: tuple[int, ...] = (4, 8, 16)  # the measured sweep: an hour on 2 cores with --workers 2
    depths: tuple[int, ...] = (1, 2, 4)
    settings: tuple[str, ...] = SETTINGS
    hidden: int = 64
    heads: int = 4
    ffn: int = 256
    train_tokens: int = 1_500_000  # per cell, prompt + completion tokens
    batch_tokens: int = 512  # per optimizer step (the examples per step follow from the setting's length);
    # small steps, many of them: these tasks sit on a loss plateau until attention finds both operands of
    # a step at once, and the number of updates, more than the tokens, decides when a cell gets off it
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    trace: str = "short"  # s5, modadd, isq: one fixed-width line per step (see tasks/serial.py); "full" otherwise
    item_tokens: bool = True  # every permutation, number and wire name is one token
    bf16: bool = False  # bfloat16 autocast is slower for these tiny models on a CPU (bench/train_dtype.py)
    n_test: int = 200  # held-out problems per cell (isq has only about 34 at any one length)
    seed: int = 0

    def cells(self) -> list[Cell]:
        return [Cell(t, n, d, s) for t in self.tasks for n in self.lengths for d in self.depths
                for s in self.settings if s != "hint" or has_hints(t)]

    def training(self) -> dict:
        """The fields that decide a cell's result besides its own coordinates."""
        d = asdict(self)
        for axis in ("tasks", "lengths", "depths", "settings"):
            del d[axis]
        return d


QUICK = SweepSpec(tasks=("modadd", "s5"), lengths=(4,), depths=(1, 2), train_tokens=60_000, batch_tokens=1024,
                  n_test=64, warmup_steps=5)


def with_axes(spec: SweepSpec, tasks=None, lengths=None, depths=None, settings=None) -> SweepSpec:
    """The spec with the sweep axes the user named replaced (None keeps the spec's own)."""
    given = {"tasks": tasks, "lengths": lengths, "depths": depths, "settings": settings}
    return replace(spec, **{k: tuple(dict.fromkeys(v)) for k, v in given.items() if v is not None})


def mixture_entry(task: str, length: int, trace: str = "full") -> dict:
    """The family at exactly this length: what a cell is tested on."""
    options = dict(OPTIONS.get(task, {}))
    if trace != "full" and task in SHORT_TRACES:
        options["trace"] = trace
    return {"task": task, "length": length, "options": options}


def training_mixture(task: str, length: int, trace: str = "full") -> list[dict]:
    """What a cell trains on: its own length, except isq, which trains on every length up to it.

    An isq question at one length is only a base and a modulus, so a held-out one starts with a
    squaring that no training question of that length starts with (nor, for a non-residue base,
    goes through). Trained on 1..n squarings, nearly every base's first squaring is seen at some
    other length, and the test at length n measures the serial computation, not a missing lookup.
    """
    if task == "isq":
        return [mixture_entry(task, n, trace) for n in range(1, length + 1)]
    return [mixture_entry(task, length, trace)]


def validate(spec: SweepSpec) -> None:
    """Refuse a sweep that cannot run, naming what is wrong, before any training starts."""
    for name, axis in (("tasks", spec.tasks), ("lengths", spec.lengths), ("depths", spec.depths),
                       ("settings", spec.settings)):
        if not axis:
            raise PonderError(f"the serial experiment needs at least one of {name}")
    for t in spec.tasks:
        if t not in TASKS:
            raise PonderError(f"unknown task {t!r} for the serial experiment; choose from {', '.join(TASKS)}")
    for s in spec.settings:
        if s not in SETTINGS:
            raise PonderError(f"unknown setting {s!r}; choose from {', '.join(SETTINGS)}")
    for d in spec.depths:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise PonderError(f"depth must be a whole number of layers >= 1, not {d!r}")
    sized_name(spec.hidden, max(spec.depths), spec.heads, spec.ffn)  # checks the sizes
    if spec.trace not in TRACES:
        raise PonderError(f"trace must be one of {', '.join(TRACES)}, not {spec.trace!r}")
    for name in ("train_tokens", "batch_tokens", "n_test"):
        if getattr(spec, name) < 1:
            raise PonderError(f"{name} must be >= 1, not {getattr(spec, name)}")
    for t in spec.tasks:
        for n in spec.lengths:
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise PonderError(f"length must be a whole number of input items >= 1, not {n!r}")
            item = parse_mixture([mixture_entry(t, n, spec.trace)])[0]  # a length the family refuses fails here
            if example_tokens(item.family.sample_length(random.Random(0), n)) > MAX_CONTEXT // 2:
                raise PonderError(f"task {t!r} at length {n} is too long for this experiment "
                                  f"(over {MAX_CONTEXT // 2} tokens with its trace)")
    if not spec.cells():
        raise PonderError("nothing to run: isq has no hint setting (its question has no per-squaring input)")


def example_tokens(p: Problem) -> int:
    """Tokens of the cot example (prompt + trace + answer) in the character vocabulary: one per character."""
    return len(p.question) + len(p.reasoning) + len(p.answer) + 8  # 5 markers, 2 spare


def heldout_set(task: str, length: int, n: int, seed: int = 0, trace: str = "full") -> list[Problem]:
    """Up to n distinct held-out problems of one length, the same for every depth and setting."""
    item = parse_mixture([mixture_entry(task, length, trace)])[0]
    rng = random.Random(f"serial-test/{task}/{length}/{seed}")
    seen: dict[str, Problem] = {}
    misses = 0
    while len(seen) < n and misses < 200:  # isq has only a handful: stop once no new ones come
        p = draw_problem(rng, item, heldout=True)
        misses = misses + 1 if p.question in seen else 0
        seen.setdefault(p.question, p)
    return list(seen.values())


def chance(task: str, length: int) -> float:
    """The accuracy of a blind guess: 1 / the number of answers a problem of this length can have.

    Every family here draws its answer (nearly) uniformly from its answer set (s5: a product of
    uniform permutations is uniform; modadd: a sum with a uniform term; cvp: balanced 0/1), so
    1/|answers| is also about the best a constant answer can do. isq names its modulus, so a guess
    knows it: its chance is 1/|answers under that modulus|, averaged over the questions.
    """
    item = parse_mixture([mixture_entry(task, length)])[0]
    rng = random.Random(f"serial-chance/{task}/{length}")
    problems = [item.family.sample_length(rng, length) for _ in range(4000)]
    known = (lambda p: p.question.rsplit(" mod ", 1)[-1]) if task == "isq" else (lambda p: "")  # noqa: E731
    answers: dict[str, set[str]] = {}
    for p in problems:
        answers.setdefault(known(p), set()).add(p.answer)
    return sum(1 / len(answers[known(p)]) for p in problems) / len(problems)


def run_cell(cell: Cell, spec: SweepSpec) -> dict:
    """Train one fresh model and measure it; the record that goes into results.json."""
    from ponder.train.sft import SFTConfig, train_sft

    t0, cpu0 = time.perf_counter(), time.process_time()
    tests = heldout_set(cell.task, cell.length, spec.n_test, spec.seed, spec.trace)
    model_name = sized_name(spec.hidden, cell.depth, spec.heads, spec.ffn)
    batch = batch_size(cell, spec)
    with tempfile.TemporaryDirectory(prefix="ponder-serial-") as tmp:
        cfg = SFTConfig(output_dir=str(Path(tmp) / "run"), model=model_name,
                        mixture=training_mixture(cell.task, cell.length, spec.trace), cot=cell.setting == "cot",
                        word_tokens=words(cell, spec),
                        max_steps=10**9, max_train_tokens=spec.train_tokens,
                        per_device_train_batch_size=batch, gradient_accumulation_steps=1,
                        learning_rate=spec.learning_rate, lr_scheduler_type="cosine", warmup_steps=spec.warmup_steps,
                        bf16=spec.bf16, max_length=MAX_CONTEXT, logging_steps=1, save_steps=10**9,
                        save_total_limit=1, seed=spec.seed, torch_threads=1)
        final = train_sft(cfg, hints=hint_targets if cell.setting == "hint" else None, quiet=True)
        logged = [r for r in read_metrics(Path(cfg.output_dir) / "metrics.jsonl") if "tokens" in r]
        last = logged[-1]
        train_seconds = time.perf_counter() - t0
        ev = _evaluate(final, cell, tests)
    return {"task": cell.task, "length": cell.length, "depth": cell.depth, "setting": cell.setting,
            "accuracy": round(ev.accuracy, 4), "correct": ev.correct, "n_test": ev.n,
            "chance": round(chance(cell.task, cell.length), 5), "train_tokens": last["tokens"],
            "train_examples": last["step"] * batch, "train_steps": last["step"], "batch_size": batch,
            "final_loss": last["loss"], "model": model_name,
            "loss_curve": [[r["step"], r["loss"]] for r in logged[:: max(1, len(logged) // 20)]],
            "reasoning_tokens_per_question": ev.summary()["reasoning_tokens_per_question"],
            "train_seconds": round(train_seconds, 1), "seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - cpu0, 1),
            "training": spec.training()}


def batch_size(cell: Cell, spec: SweepSpec) -> int:
    """Examples per step such that a step reads about `batch_tokens` tokens in every setting.

    So base, cot and hint take about the same number of optimizer steps on the same schedule,
    not only the same number of tokens: a cot example is longer, so its batches hold fewer.
    """
    from ponder.model.chat import ChatFormat
    from ponder.model.tokenizer import build_char_tokenizer
    from ponder.train.data import SFTData

    data = SFTData(parse_mixture(training_mixture(cell.task, cell.length, spec.trace)),
                   build_char_tokenizer(words(cell, spec)), ChatFormat(),
                   seed=spec.seed, cot=cell.setting == "cot")
    rng = random.Random(f"serial-batch/{cell.task}/{cell.length}")
    mean = sum(len(data.example(rng).ids) for _ in range(64)) / 64
    return max(1, round(spec.batch_tokens / mean))


def words(cell: Cell, spec: SweepSpec) -> list[str]:
    return item_words(cell.task, cell.length) if spec.item_tokens else []


def _evaluate(model_dir: Path, cell: Cell, tests: list[Problem]):
    """Greedy, one chain, exact answer match by the task's own `check`."""
    from ponder.engine.local import LocalEngine
    from ponder.evaluate import evaluate
    from ponder.model.loading import load_model
    from ponder.think.sampling import ChainOfThought

    model, tok, chat = load_model(model_dir)
    longest = max(len(chat.completion(p.steps, p.answer)) for p in tests)  # characters >= tokens
    strategy = ChainOfThought(LocalEngine(model, tok, max_batch=256), chat, max_tokens=longest + 16)
    return evaluate(strategy, cell.task, tests[0].level, tests)


# ----------------------------------------------------------------------------- the sweep


def load_results(path: Path) -> dict[str, dict]:
    """Finished records by cell key; an unreadable file counts as none (it was never replaced half-written)."""
    if not path.exists():
        return {}
    try:
        saved = json.loads(path.read_text())
        cells = saved["cells"]
    except (ValueError, KeyError, TypeError):
        raise PonderError(f"{path} is not a results file of this experiment; move it or pick another --out") from None
    # a record written before records kept their own command was made by the file's last command
    return {Cell(r["task"], r["length"], r["depth"], r["setting"]).key: {"command": saved.get("command", ""), **r}
            for r in cells}


def write_json_atomic(path: Path, data: object) -> None:
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def run_sweep(spec: SweepSpec, out: Path, workers: int = 1, command: str = "") -> dict[str, dict]:
    """Run every cell not finished yet (one thread each, `workers` at once); write results as they come."""
    from ponder.experiments.serial_report import write_heatmaps, write_markdown

    validate(spec)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise PonderError(f"--workers must be a whole number >= 1, not {workers!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = load_results(out / "results.json")
    cells = spec.cells()
    todo = [c for c in cells if results.get(c.key, {}).get("training") != spec.training()]
    bar = progress(len(cells), len(cells) - len(todo), "serial cells")
    bar.unit = "cell"

    def finished(record: dict) -> None:
        key = Cell(record["task"], record["length"], record["depth"], record["setting"]).key
        results[key] = {**record, "command": command}  # a folder can hold cells of several commands
        write_json_atomic(out / "results.json", {"experiment": "serial", "command": command, "cells": _ordered(results)})
        write_markdown(out / "results.md", _ordered(results), command)
        bar.update(1)
        bar.set_postfix_str(f"{key} {record['accuracy']:.0%}")

    threads = torch.get_num_threads()
    try:
        if workers == 1 or len(todo) <= 1:
            for c in todo:
                finished(run_cell(c, spec))
        else:
            _run_parallel(todo, spec, workers, finished)
    finally:
        bar.close()
        torch.set_num_threads(threads)
    write_markdown(out / "results.md", _ordered(results), command)
    write_heatmaps(out / "heatmaps.png", _ordered(results))
    return results


def _run_parallel(todo: list[Cell], spec: SweepSpec, workers: int, finished) -> None:
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_one_thread)
    try:
        futures = [pool.submit(run_cell, c, spec) for c in todo]
        for f in as_completed(futures):
            finished(f.result())
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _one_thread() -> None:
    torch.set_num_threads(1)


def _ordered(results: dict[str, dict]) -> list[dict]:
    def order(r: dict) -> tuple:
        t = TASKS.index(r["task"]) if r["task"] in TASKS else len(TASKS)
        return (t, r["task"], r["length"], r["depth"], SETTINGS.index(r["setting"]))

    return sorted(results.values(), key=order)
