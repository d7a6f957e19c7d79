"""Whole-chain strategies answer anytime: a question whose chains the budget cuts all is closed, not lost."""

from __future__ import annotations

import pytest

from ponder import PonderError
from ponder.model.chat import ChatFormat
from ponder.think.sampling import ChainOfThought, MajorityVote
from ponder.think.show import describe
from ponder.think.verified import BestOfN
from scripted import TableVerifier, WorldEngine

pytestmark = pytest.mark.usefixtures("one_thread")
CHAT = ChatFormat()
Q = "What is the thing?"


def test_a_chain_the_budget_cuts_is_closed_after_its_last_whole_step_and_answers():
    world = WorldEngine(["a\nb\nc\nd\ne\nf</think>9<|end|>"], fallback="7<|end|>")
    plain = ChainOfThought(world, CHAT).solve(Q, 12)
    assert plain.answer == "" and plain.finish_reason == "length" and plain.budget_exhausted
    assert "the budget ran out: no answer" in describe(plain)
    world.generated = 0
    th = ChainOfThought(world, CHAT, answer_reserve=4).solve(Q, 12)
    # the chain runs to 9 tokens (12 less a reserve of 3), inside step e; it is closed after step d, and the
    # marker and the answer fill the reserve
    assert th.answer == "7" and th.reasoning == "a\nb\nc\nd" and th.finish_reason == "stop"
    assert th.budget_exhausted and th.usage.completion_tokens == world.generated + 1 == 12
    assert th.usage.answer_tokens == 2
    assert th.tree.answer == "7" and "the budget ran out: best answer found by then" in describe(th)
    assert not ChainOfThought(world, CHAT, answer_reserve=4).solve(Q).budget_exhausted  # no budget: no close


def test_a_chain_cut_inside_its_first_step_has_nothing_to_answer_from():
    world = WorldEngine(["abcdefghij\nk</think>9<|end|>"], fallback="7<|end|>")
    th = ChainOfThought(world, CHAT, answer_reserve=4).solve(Q, 12)
    assert th.answer == "" and th.budget_exhausted and th.usage.completion_tokens == world.generated == 9


def test_where_one_chain_answered_the_cut_ones_run_on_to_their_whole_share():
    world = WorldEngine(["s</think>5<|end|>", "l1\nl2\nl3</think>6<|end|>"])
    # budget 22 over 2 chains: 11 each; the reserve of 4 first holds the long chain (11 tokens) to 9
    th = MajorityVote(world, CHAT, n=2, answer_reserve=4).solve(Q, 22)
    assert [c.answer for c in th.tree.children] == ["5", "6"] and not th.budget_exhausted
    assert th.usage.completion_tokens == world.generated == 4 + 11
    world.generated = 0
    plain = MajorityVote(world, CHAT, n=2).solve(Q, 22)
    assert [c.answer for c in plain.tree.children] == ["5", "6"] and plain.answer == th.answer



def test_where_every_chain_was_cut_only_one_keeps_room_to_close_and_the_others_may_still_finish():
    # 2 chains, 12 tokens each, the first 9 at once: both are cut; x holds the room to close, and y, which
    # needs exactly its 12, runs on to them and answers as it would have without a reserve
    world = WorldEngine(["x1\nx2\nx3\nx4\nx5</think>1<|end|>", "y1\ny2\nyyy</think>2<|end|>"])
    th = MajorityVote(world, CHAT, n=2, answer_reserve=4).solve(Q, 24)
    assert th.answer == "2" and not th.budget_exhausted and [c.answer for c in th.tree.children] == [None, "2"]
    assert th.usage.completion_tokens == world.generated == 12 + 12

CUT = ["x1\nx2\nx3\nx4</think>1<|end|>", "y1\ny2\ny3\ny4</think>2<|end|>", "x1\nx2</think>1<|end|>",
       "y1\ny2</think>2<|end|>"]


def test_majority_closes_the_chain_that_got_furthest_when_every_chain_was_cut():
    world = WorldEngine(CUT + ["z1</think>3<|end|>"])
    assert MajorityVote(world, CHAT, n=2).solve(Q, 16).answer == ""
    th = MajorityVote(world, CHAT, n=2, answer_reserve=4).solve(Q, 16)  # both cut inside step 3
    assert th.answer == "1" and th.reasoning == "x1\nx2" and th.budget_exhausted
    # x kept room to close and took no more; y ran on to its whole share; the close took the marker and "1"
    assert th.usage.completion_tokens == 6 + 8 + 1 + 1 == 16 and th.usage.engine_calls == 3


@pytest.mark.parametrize("liked, answer", [("y2", "2"), ("x2", "1")])
def test_best_of_n_closes_the_cut_chain_its_verifier_likes_best(liked, answer):
    world = WorldEngine(CUT)
    v = TableVerifier({"x2": 0.2, "y2": 0.2, liked: 0.9})
    th = BestOfN(world, CHAT, v, n=2, answer_reserve=4).solve(Q, 16)
    assert th.answer == answer and th.reasoning == f"{answer.replace('1', 'x').replace('2', 'y')}1\n" \
        f"{answer.replace('1', 'x').replace('2', 'y')}2" and th.budget_exhausted
    assert [c.chosen for c in th.tree.children] == [answer == "1", answer == "2"]
    assert th.usage.completion_tokens <= 16


def test_a_negative_reserve_is_refused_in_one_line():
    with pytest.raises(PonderError, match="answer_reserve must be >= 0"):
        MajorityVote(WorldEngine(CUT), CHAT, answer_reserve=-1)


class Worlds:
    """One scripted world per question, so questions in one batch write different chains."""

    capabilities = WorldEngine([]).capabilities

    def __init__(self, worlds: dict[str, WorldEngine]) -> None:
        self.worlds = worlds

    @property
    def generated(self) -> int:
        return sum(w.generated for w in self.worlds.values())

    def count_tokens(self, text: str) -> int:
        return WorldEngine([]).count_tokens(text)

    def generate(self, prompts, params, on_step=None):
        return [next(w for q, w in self.worlds.items() if q in p).generate([p], params)[0] for p in prompts]


def test_a_cut_chain_steps_on_while_its_share_leaves_room_for_the_longest_answer_seen():
    short, long = "Short one?", "Long one?"
    # the long chain is cut at 12 of its 15 tokens, at the end of its last step; the short question's answer
    # (2 tokens and the marker) tells it that one more token still leaves room to answer: the close marker
    world = Worlds({short: WorldEngine(["s\nt</think>5<|end|>"]),
                    long: WorldEngine(["aa\nbb\ncc\nd\ne</think>9<|end|>"], fallback="7<|end|>")})
    cot = ChainOfThought(world, CHAT, answer_reserve=4)
    both = cot.solve_batch([short, long], 16)
    assert [t.answer for t in both] == ["5", "9"] and not both[1].budget_exhausted
    assert both[1].usage.completion_tokens == 15 and world.generated == 6 + 15
    alone = cot.solve(long, 16)  # no answer seen: the whole reserve is kept, and the chain is closed
    assert alone.answer == "7" and alone.reasoning == "aa\nbb\ncc\nd" and alone.budget_exhausted


def test_ask_takes_an_answer_reserve_and_refuses_it_where_it_means_nothing(micro_dir, capsys):
    import json

    from ponder.cli import main

    args = ["ask", "What is 2 + 3?", "--model", str(micro_dir), "--budget", "20", "--max-tokens", "64"]
    assert main(args + ["--strategy", "cot", "--answer-reserve", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["usage"]["completion_tokens"] <= 20
    assert main(args + ["--strategy", "cot", "--answer-reserve", "-1"]) == 2
    assert "answer_reserve must be >= 0, got -1" in capsys.readouterr().err
    assert main(args + ["--strategy", "revise", "--answer-reserve", "4"]) == 2
    assert "answer_reserve" in capsys.readouterr().err


def test_an_answer_cut_short_neither_votes_nor_scores():
    """A chain that never closed its answer (cut at the cap after `</think>`) is no answer, in a vote as in
    best-of-N: otherwise a lenient check credits the last digit of whatever the cut chain wrote."""
    from ponder.evaluate import evaluate, heldout_problems

    cut = ["a</think>1111111111<|end|>", "b</think>1111111111<|end|>"]
    world = WorldEngine(cut + ["c</think>3<|end|>"])
    assert MajorityVote(world, CHAT, n=3, max_tokens=8).solve(Q).answer == "3"
    assert MajorityVote(WorldEngine(cut), CHAT, n=2, max_tokens=8).solve(Q).finish_reason == "length"
    problem = heldout_problems("add", 2, 1)[0]
    right = f"x</think>{problem.answer}<|end|>"
    whole = evaluate(ChainOfThought(WorldEngine([right]), CHAT), "add", 2, [problem])
    shut = evaluate(ChainOfThought(WorldEngine([right]), CHAT, max_tokens=len(problem.answer) + 2), "add", 2,
                    [problem])
    assert (whole.correct, shut.correct) == (1, 0)  # the answer was all there, but its end never came


@pytest.mark.parametrize("chains,make", [(1, lambda w: ChainOfThought(w, CHAT)),
                                         (2, lambda w: MajorityVote(w, CHAT, n=2))])
def test_a_long_question_in_the_batch_does_not_shorten_the_others_chains(chains, make):
    """Each question's chains get the room its own prompt leaves in the context: in the server a request's
    batch-mates are other users', and their prompt lengths must not change its answer."""
    long_q = "Why? " * 12
    world = WorldEngine(["abcdefghij</think>9<|end|>"])
    world.max_positions = world.count_tokens(CHAT.prompt(long_q)) + 8  # room for 8 tokens after the long one
    alone = make(world).solve(Q)
    batch = make(world).solve_batch([Q, long_q, Q])
    assert alone.answer == "9" and alone.finish_reason == "stop"
    assert [(t.answer, t.reasoning, t.usage.completion_tokens) for t in (batch[0], batch[2])] == \
        [(alone.answer, alone.reasoning, alone.usage.completion_tokens)] * 2
    assert batch[1].answer == "" and batch[1].usage.completion_tokens == 8 * chains  # cut by the context


def test_a_question_capped_apart_from_its_batch_still_streams_to_its_own_index():
    from ponder.engine.base import Capabilities
    from ponder.think.stream import Listener

    class Streaming(WorldEngine):
        capabilities = Capabilities(streaming=True)

        def generate(self, prompts, params, on_step=None):
            out = super().generate(prompts, params)
            if on_step is not None:
                on_step([(i, 0) for i in range(len(prompts))], [g[0].text for g in out])
            return out

    class Heard(Listener):
        def __init__(self):
            self.text: dict[int, str] = {}

        def reasoning(self, index, text):
            self.text[index] = self.text.get(index, "") + text

    long_q = "Why? " * 12
    world = Streaming(["abcdefghij</think>9<|end|>"])
    world.max_positions = world.count_tokens(CHAT.prompt(long_q)) + 8
    heard = Heard()
    ChainOfThought(world, CHAT).solve_batch([long_q, Q, long_q], listener=heard)
    assert heard.text == {0: "abcdefgh", 1: "abcdefghij", 2: "abcdefgh"}
