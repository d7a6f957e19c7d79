"""Verifier-guided strategies on a scripted engine and a table verifier: choices, trees, budgets, usage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder import PonderError
from ponder.model.chat import ChatFormat
from ponder.think.base import Thought
from ponder.think.mcts import MCTS
from ponder.think.registry import build_strategy
from ponder.think.sampling import ChainOfThought, MajorityVote
from ponder.think.search import DVTS, BeamSearch
from ponder.think.show import describe
from ponder.think.verified import BestOfN, pick
from scripted import WORLD, TableVerifier, WorldEngine, tokens

pytestmark = pytest.mark.usefixtures("one_thread")
CHAT = ChatFormat()
Q = "What is the thing?"


def test_weighted_best_of_n_sums_scores_per_answer_where_naive_takes_the_single_best():
    world = WorldEngine(["a1\na2</think>5<|end|>", "b1\nb2</think>5<|end|>", "c1\nc2</think>5<|end|>",
                         "d1\nd2</think>7<|end|>"])
    v = TableVerifier({"=5": 0.5, "=7": 0.9})  # "last": the answer's score decides
    naive = BestOfN(world, CHAT, v, n=4, weighted=False).solve(Q)
    weighted = BestOfN(world, CHAT, v, n=4, weighted=True).solve(Q)
    assert naive.answer == "7" and weighted.answer == "5"  # 3 x 0.5 = 1.5 > 0.9
    assert [c.chosen for c in naive.tree.children] == [False, False, False, True]
    assert sum(c.chosen for c in weighted.tree.children) == 1
    assert [c.answer for c in weighted.tree.children] == ["5", "5", "5", "7"]
    assert pick(["x", "y", "x"], [0.2, 0.3, 0.2], weighted=True) == 0  # tie on the sum: first seen answer
    assert pick(["x", "y", "x"], [0.2, 0.3, 0.25], weighted=False) == 1


def test_beam_search_keeps_the_top_k_by_score_and_marks_the_chosen_path():
    world = WorldEngine(["p\np2\np3</think>1<|end|>", "q\nq2\nq3</think>2<|end|>", "r\nr2\nr3</think>3<|end|>",
                         "s\ns2\ns3</think>4<|end|>"])
    v = TableVerifier({"p": 0.9, "q": 0.1, "r": 0.8, "s": 0.2, "p2": 0.3, "r2": 0.6, "=1": 0.5, "=3": 0.7})
    th = BeamSearch(world, CHAT, v, beam_width=2, expansions=2, weighted=False).solve(Q)
    first = {n.text: n for n in th.tree.children}
    assert set(first) == {"p", "q", "r", "s"}
    assert [t for t, n in first.items() if n.children] == ["p", "r"]  # only the two best were expanded
    assert first["p"].visits == first["r"].visits == 1 and first["q"].visits == 0
    assert th.answer == "3" and th.reasoning == "r\nr2\nr3"  # answer 3 (0.7) beats answer 1 (0.5) at the end
    chosen = [n.text for n in th.tree.walk() if n.chosen]
    assert chosen == ["r", "r2", "r3"]
    assert th.finish_reason == "stop" and not th.budget_exhausted
    assert th.usage.completion_tokens == world.generated
    text = describe(th)
    assert "|-* [0.800] r\n" in text and "* [0.700] r3  => 3" in text and "|-  [0.100] q\n" in text


def test_beam_ranks_siblings_by_their_newest_step_and_picks_the_answer_by_the_verifiers_aggregation():
    # Both chains share the weak first step w (0.3). Under "min" the candidates x (0.9) and y (0.4) both
    # score 0.3 and tie, and the tie goes to the first sample, y; ranked by their newest step, x is kept.
    world = WorldEngine(["w\ny\ny2</think>2<|end|>", "w\nx\nx2</think>1<|end|>"])
    v = TableVerifier({"w": 0.3, "x": 0.9, "y": 0.4, "x2": 0.8, "y2": 0.8, "=1": 0.7, "=2": 0.7}, aggregation="min")
    th = BeamSearch(world, CHAT, v, beam_width=1, expansions=2).solve(Q)
    assert th.answer == "1" and th.reasoning == "w\nx\nx2"
    tied = BeamSearch(world, CHAT, v, beam_width=1, expansions=2, step_aggregation="min").solve(Q)
    assert tied.answer == "2"


def test_beam_picks_among_finished_chains_by_the_verifiers_aggregation_not_the_newest_step():
    world = WorldEngine(["a\na2</think>1<|end|>", "b\nb2</think>2<|end|>"])
    # a's chain has the better last score (answer 0.9) but a weak step a2 (0.1); under min, b's chain wins
    v = TableVerifier({"a": 0.8, "b": 0.7, "a2": 0.1, "b2": 0.6, "=1": 0.9, "=2": 0.6}, aggregation="min")
    th = BeamSearch(world, CHAT, v, beam_width=2, expansions=1, weighted=False).solve(Q)
    assert th.answer == "2"
    last = BeamSearch(world, CHAT, v, beam_width=2, expansions=1, weighted=False, aggregation="last").solve(Q)
    assert last.answer == "1"


def test_a_narrow_beam_that_collects_more_finished_chains_searches_on_past_its_first_answer():
    # a answers at once (a weak 1); its sibling b is still open. Classic beam search stops at the first
    # answer of its one-wide beam; asked for two finished chains, it goes on from b and the verifier
    # chooses between the answers.
    world = WorldEngine(["a</think>1<|end|>", "b\nb2</think>2<|end|>", "b\nb3</think>2<|end|>"])
    v = TableVerifier({"a": 0.9, "b": 0.6, "=1": 0.3, "=2": 0.8})
    classic = BeamSearch(world, CHAT, v, beam_width=1, expansions=2).solve(Q)
    assert classic.answer == "1" and [n.text for n in classic.tree.children if n.children] == []
    world.generated = 0
    on = BeamSearch(world, CHAT, v, beam_width=1, expansions=2, finished_chains=2).solve(Q)
    assert on.answer == "2" and on.reasoning in ("b\nb2", "b\nb3")
    assert [n.text for n in on.tree.children if n.children] == ["b"]
    assert on.usage.completion_tokens == world.generated
    with pytest.raises(PonderError, match="finished_chains must be >= 1"):
        BeamSearch(world, CHAT, v, finished_chains=0)


def test_dvts_keeps_one_chain_per_subtree():
    world = WorldEngine(["a\naa</think>1<|end|>", "b\nbb</think>2<|end|>", "c\ncc</think>3<|end|>",
                         "d\ndd</think>4<|end|>"])
    v = TableVerifier({"a": 0.9, "b": 0.8, "c": 0.1, "d": 0.2, "=4": 0.9})
    th = DVTS(world, CHAT, v, n=4, expansions=2).solve(Q)
    expanded = sorted(n.text for n in th.tree.children if n.children)
    assert expanded == ["a", "d"]  # subtree {a, b} keeps a; subtree {c, d} keeps d (beam would keep a and b)
    beam = BeamSearch(world, CHAT, v, beam_width=2, expansions=2).solve(Q)
    assert sorted(n.text for n in beam.tree.children if n.children) == ["a", "b"]
    assert th.answer == "4"


def test_mcts_spends_its_simulations_where_the_values_are_high():
    world = WorldEngine([f"{p}\n{p}{i}\n{p}{i}{j}</think>{p}<|end|>" for i in range(2) for j in range(2) for p in "gb"])
    v = TableVerifier({"g": 0.9, "b": 0.1, "=g": 0.9, "=b": 0.1}, default=0.6)
    th = MCTS(world, CHAT, v, simulations=12, expansions=2, c_puct=0.5).solve(Q)
    good, bad = (next(n for n in th.tree.children if n.text == t) for t in ("g", "b"))
    assert good.visits > 2 * bad.visits and th.tree.visits == sum(n.visits for n in th.tree.children)
    assert th.answer == "g" and [n.text for n in th.tree.walk() if n.chosen][0] == "g"
    assert th.usage.completion_tokens == world.generated


def test_an_answer_cut_at_the_step_separator_is_written_to_its_end():
    world = WorldEngine(["s1\ns2</think>\nthe answer is 5<|end|>"])
    th = BeamSearch(world, CHAT, TableVerifier({}), beam_width=1, expansions=1).solve(Q)
    assert th.answer == "the answer is 5" and th.reasoning == "s1\ns2"
    assert th.usage.completion_tokens == world.generated
    assert th.usage.answer_tokens == len(tokens("\nthe answer is 5<|end|>"))


def test_lookahead_scores_a_step_by_where_greedy_steps_lead():
    world = WorldEngine(["x\nx2\nx3</think>1<|end|>", "y\ny2\ny3</think>2<|end|>"])
    v = TableVerifier({"x": 0.9, "y": 0.2, "x2": 0.1, "y2": 0.8, "x3": 0.1, "y3": 0.8})
    plain = BeamSearch(world, CHAT, v, beam_width=1, expansions=2).solve(Q)
    ahead = BeamSearch(world, CHAT, v, beam_width=1, expansions=2, lookahead=1).solve(Q)
    assert plain.answer == "1" and ahead.answer == "2"
    assert ahead.usage.completion_tokens == world.generated - plain.usage.completion_tokens


def test_when_nothing_finishes_the_best_chain_is_closed_and_answers():
    world = WorldEngine(["a\nb\nc\nd\ne\nf\ng\nh</think>9<|end|>"], fallback="7<|end|>")
    th = BeamSearch(world, CHAT, TableVerifier({}), beam_width=1, expansions=1, max_depth=3).solve(Q)
    assert th.answer == "7" and th.reasoning == "a\nb\nc" and not th.budget_exhausted
    assert th.usage.completion_tokens == world.generated + 1  # + the think-close marker written for it


STRATEGIES = {
    "best_of_n": lambda e, v: BestOfN(e, CHAT, v, n=4),
    "best_of_n_anytime": lambda e, v: BestOfN(e, CHAT, v, n=3, answer_reserve=8),
    "majority_anytime": lambda e, v: MajorityVote(e, CHAT, n=4, answer_reserve=8),
    "cot_anytime": lambda e, v: ChainOfThought(e, CHAT, temperature=0.8, answer_reserve=8),
    "beam": lambda e, v: BeamSearch(e, CHAT, v, beam_width=2, expansions=3, max_step_tokens=12),
    "beam_lookahead": lambda e, v: BeamSearch(e, CHAT, v, beam_width=2, expansions=2, lookahead=2,
                                              max_step_tokens=12),
    "beam_collecting": lambda e, v: BeamSearch(e, CHAT, v, beam_width=1, expansions=3, finished_chains=5,
                                               max_step_tokens=12),
    "dvts": lambda e, v: DVTS(e, CHAT, v, n=6, expansions=2, max_step_tokens=12),
    "mcts": lambda e, v: MCTS(e, CHAT, v, simulations=10, expansions=2, max_step_tokens=12),
}


@settings(max_examples=120, deadline=None)
@given(name=st.sampled_from(sorted(STRATEGIES)), budget=st.one_of(st.none(), st.integers(1, 400)),
       scores=st.lists(st.floats(0, 1), min_size=30, max_size=30))
def test_no_strategy_generates_past_its_budget_and_every_token_is_counted(name, budget, scores):
    world = WorldEngine(WORLD, fallback="1<|end|>")
    steps = sorted({s for c in WORLD for s in c.split("</think>")[0].split("\n")})
    v = TableVerifier(dict(zip(steps, scores)))
    th = STRATEGIES[name](world, v).solve(Q, budget)
    u = th.usage
    if budget is not None:
        assert u.completion_tokens <= budget
    assert u.completion_tokens - world.generated in (0, 1)  # 1: a think-close written to force an answer
    assert 0 <= u.answer_tokens <= u.completion_tokens and u.reasoning_tokens <= u.completion_tokens
    assert th.answer or th.finish_reason == "length"
    if budget is None or budget >= 2000:
        assert not th.budget_exhausted
    assert Thought.from_json(th.to_json()) == th


def test_a_thought_and_its_tree_round_trip_through_json():
    world = WorldEngine(WORLD)
    th = BeamSearch(world, CHAT, TableVerifier({"a0=step0": 0.7}), beam_width=2, expansions=2).solve(Q, 120)
    back = Thought.from_json(th.to_json())
    assert back == th and back.tree.children[0].score == th.tree.children[0].score
    assert back.to_dict()["usage"]["answer_tokens"] == th.usage.answer_tokens


def test_a_batch_of_questions_shares_engine_calls():
    world = WorldEngine(WORLD)
    beam = BeamSearch(world, CHAT, TableVerifier({}), beam_width=2, expansions=2)
    one = beam.solve(Q)
    calls = len(world.calls)
    both = beam.solve_batch([Q, "Another one?"])
    assert len(world.calls) - calls == calls  # two questions, the same number of calls as one
    assert both[0] == one


@pytest.mark.parametrize("make, message", [
    (lambda e, v: BeamSearch(e, CHAT, v, beam_width=0), "beam_width must be >= 1"),
    (lambda e, v: BeamSearch(e, CHAT, v, expansions=0), "expansions must be >= 1"),
    (lambda e, v: BeamSearch(e, CHAT, v, lookahead=-1), "lookahead must be >= 0"),
    (lambda e, v: DVTS(e, CHAT, v, n=0), "n and expansions"),
    (lambda e, v: MCTS(e, CHAT, v, simulations=0), "simulations must be >= 1"),
    (lambda e, v: MCTS(e, CHAT, v, c_puct=-1), "c_puct must be >= 0"),
    (lambda e, v: BestOfN(e, CHAT, v, n=0), "n >= 1"),
    (lambda e, v: BestOfN(e, CHAT, v, aggregation="mean"), "unknown score aggregation"),
    (lambda e, v: BeamSearch(e, CHAT, None), "needs a verifier"),
    (lambda e, v: build_strategy("nosuch", e, CHAT, v), "unknown strategy"),
    (lambda e, v: build_strategy("beam", e, CHAT, None), "needs a verifier"),
    (lambda e, v: BeamSearch(e, CHAT, v).solve(Q, -5), "budget must be >= 1"),
    (lambda e, v: BestOfN(e, CHAT, v).solve(Q, 0), "budget must be >= 1"),
])
def test_bad_parameters_give_a_clear_error(make, message):
    with pytest.raises(PonderError, match=message):
        make(WorldEngine(WORLD), TableVerifier({}))


def test_ask_prints_the_search_tree_and_its_json(micro_dir, tmp_path, capsys):
    from ponder.cli import main
    from ponder.reward import RewardModel

    RewardModel.from_policy(micro_dir).save(tmp_path / "rm")
    args = ["ask", "What is 2 + 3?", "--model", str(micro_dir), "--strategy", "beam", "--verifier",
            str(tmp_path / "rm"), "--beam-width", "2", "--expansions", "2", "--budget", "48", "--max-tokens", "24"]
    assert main(args + ["--show-tree"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("search tree:") and "(root)" in out and "strategy beam" in out
    assert main(args + ["--show-tree", "--json"]) == 0
    d = __import__("json").loads(capsys.readouterr().out)
    assert d["tree"]["children"] and d["usage"]["completion_tokens"] <= 48
    assert main(["ask", "What is 2 + 3?", "--model", str(micro_dir), "--strategy", "dvts"]) == 2
    assert "needs a verifier" in capsys.readouterr().err
    assert main(args + ["--finished-chains", "0"]) == 2
    assert "finished_chains must be >= 1, got 0" in capsys.readouterr().err
    assert main(["train", "prm", "--config", "/no/such.yaml"]) == 2
    assert "config file does not exist" in capsys.readouterr().err
