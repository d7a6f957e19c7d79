"""The shipped model: present, loadable by name, and thinking its way to answers."""

import pytest

from ponder.engine.local import LocalEngine
from ponder.model.loading import builtin_path, load_model
from ponder.tasks import get_task
from ponder.tasks.base import Problem
from ponder.think import strategy_for_effort


@pytest.fixture(scope="module")
def builtin():
    model, tok, chat = load_model("built-in")
    return LocalEngine(model, tok), chat


def test_builtin_model_ships_inside_the_package_under_25_mb():
    path = builtin_path()
    size = sum(f.stat().st_size for f in path.iterdir())
    assert (path / "model.safetensors").exists() and (path / "README.md").exists()
    assert size < 25 * 2**20


@pytest.mark.parametrize("family, question, answer", [
    ("s5", "Compose: 21345 13254 54321 12345", "35412"),
    ("s5", "Compose: 21345 13254 54321", "35412"),  # the canonical forms, odd lengths included
    ("isq", "What is 3^(2^5) mod 97?", "35"),
    ("add", "What is 48213 + 7395?", "55608"),
    ("modadd", "What is 3 + 5 + 6 + 1 mod 7?", "1"),
    ("mul", "What is 48 * 7?", "336"),
])
def test_builtin_model_thinks_its_way_to_canonical_answers(builtin, family, question, answer):
    engine, chat = builtin
    thought = strategy_for_effort("low", engine, chat).solve(question)
    assert get_task(family).check(Problem(family, 1, question, answer), thought.answer), thought
    assert thought.usage.reasoning_tokens > 5  # it wrote a chain of thought first
    assert thought.finish_reason == "stop"


def test_effort_presets_count_every_chain(builtin):
    engine, chat = builtin
    q = "What is 3 + 5 + 6 + 1 mod 7?"
    low = strategy_for_effort("low", engine, chat).solve(q)
    before = engine.stats.generated_tokens
    high = strategy_for_effort("high", engine, chat, preset="vote").solve(q)
    generated = engine.stats.generated_tokens - before
    assert high.usage.completion_tokens == generated  # all 16 chains, not just the chosen one
    assert high.usage.completion_tokens > 8 * low.usage.completion_tokens
    assert high.usage.answer_tokens == low.usage.answer_tokens  # only one answer is shown
    assert len(high.tree.children) == 16 and sum(c.chosen for c in high.tree.children) == 1
    before = engine.stats.generated_tokens
    adaptive = strategy_for_effort("high", engine, chat, preset="adaptive").solve(q)
    assert adaptive.answer == low.answer == "1"
    chains = [n for n in adaptive.tree.walk() if n.answer is not None]
    assert len(chains) == 4  # the probe's 4 chains agreed: high spends no more on an easy question
    assert adaptive.usage.completion_tokens == engine.stats.generated_tokens - before
