"""adaptive and revise on scripted engines: early stopping, spending more, budgets, choosing by verifier;
revision training pairs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder import PonderError
from ponder.engine.base import SamplingParams
from ponder.model.chat import ChatFormat
from ponder.tasks import Problem
from ponder.think.adaptive import Adaptive
from ponder.think.base import Thought
from ponder.think.policy import AdaptivePolicy, Tier, estimate
from ponder.think.registry import build_strategy, scaled_params
from ponder.think.revise import Revise
from ponder.train.revise_data import Attempt, encode, revision_examples
from scripted import CHAIN, WORLD, TableVerifier, VoteEngine, WorldEngine, tokens

pytestmark = pytest.mark.usefixtures("one_thread")
CHAT = ChatFormat()
Q = "What is the thing?"


# -- adaptive ------------------------------------------------------------------------------


def test_adaptive_stops_after_the_probe_when_its_answers_agree():
    engine = VoteEngine({Q: ["5"] * 3 + ["7"] + ["9"] * 50})
    th = Adaptive(engine, CHAT).solve(Q, budget=2000)
    assert th.answer == "5" and not th.budget_exhausted
    assert th.usage.completion_tokens == engine.generated == 4 * CHAIN  # the probe only: 4 chains of 2000 tokens
    probe = th.tree.children[0]
    assert len(th.tree.children) == 1 and len(probe.children) == 4
    assert "agreement 0.75" in probe.text and "-> easy: stop" in probe.text
    assert probe.children[0].chosen and sum(n.chosen for n in th.tree.walk()) == 2  # the probe and its chain
    assert th.usage.reasoning_tokens == th.usage.completion_tokens - len(tokens("5<|end|>"))


def test_adaptive_spends_more_when_the_probe_disagrees_and_stops_once_answers_agree():
    engine = VoteEngine({Q: ["5", "7", "8", "9"] + ["5"] * 100})
    th = Adaptive(engine, CHAT).solve(Q, budget=2000)
    # probe 1/4 agree (hard: sample up to 16); +4 -> 5/8 (medium, go on); +4 -> 9/12 = 0.75 (easy: stop)
    assert th.answer == "5" and th.usage.completion_tokens == engine.generated == 12 * CHAIN
    probe, follow = th.tree.children
    assert "-> hard: sample" in probe.text and len(follow.children) == 8
    assert follow.text.startswith("sample: 8 more chains") and probe.chosen and not follow.chosen  # greedy: first 5
    agree = Adaptive(VoteEngine({Q: ["5"] * 100}), CHAT).solve(Q, budget=2000)
    assert agree.usage.completion_tokens < th.usage.completion_tokens


def test_adaptive_stops_when_the_budget_pays_for_no_more_chains():
    engine = VoteEngine({Q: ["5", "7", "8", "9"] * 30})
    th = Adaptive(engine, CHAT).solve(Q, budget=6 * CHAIN)
    assert th.usage.completion_tokens <= 6 * CHAIN and th.budget_exhausted and th.answer == "5"  # 5 twice
    one = Adaptive(VoteEngine({Q: ["5"]}), CHAT).solve(Q, budget=CHAIN)  # the greedy chain, no probe after
    assert one.answer == "5" and one.usage.completion_tokens == CHAIN and len(one.tree.children[0].children) == 1
    always = AdaptivePolicy(tiers=(Tier("all", 1.0, "sample", chains=8),))  # a tier that samples, nothing to pay with
    poor = Adaptive(VoteEngine({Q: ["5"]}), CHAT, policy=always).solve(Q, budget=CHAIN + 3)
    assert poor.answer == "5" and poor.budget_exhausted and len(poor.tree.children) == 1


def test_adaptive_does_not_score_a_lone_greedy_chain_the_budget_leaves_no_alternative_to():
    """At one chain's budget the answer is the greedy chain's whatever the verifier says: no verifier pass."""
    v = TableVerifier({}, default=0.1)
    one = Adaptive(VoteEngine({Q: ["5", "7"]}), CHAT, v).solve(Q, budget=CHAIN)
    assert one.answer == "5" and one.budget_exhausted and v.calls == 0
    assert "mean score" not in one.tree.children[0].text and one.tree.children[0].children[0].score is None
    two = Adaptive(VoteEngine({Q: ["5", "7"]}), CHAT, v).solve(Q, budget=3 * CHAIN)  # a probe to choose from
    assert v.calls > 0 and all(n.score is not None for n in two.tree.children[0].children)


def test_adaptive_does_not_delegate_what_the_budget_left_cannot_pay_a_whole_chain_for():
    """A delegate's lone chain, cut short or not, would overrule the probe's two scored chains."""
    v = TableVerifier({"=5": 0.9, "=7": 0.3, "=9": 0.95})
    policy = AdaptivePolicy(probe=2, tiers=(Tier("all", 1.0, "best_of_n"),))
    each = math.ceil(policy.slack * CHAIN)
    th = Adaptive(VoteEngine({Q: ["5", "7", "9"]}), CHAT, v, policy=policy).solve(Q, budget=CHAIN + each + CHAIN)
    assert th.answer == "5" and th.budget_exhausted and th.usage.completion_tokens == 2 * CHAIN
    assert th.tree.children[1].text.endswith("no budget left for a whole chain")
    rich = Adaptive(VoteEngine({Q: ["5", "7", "9"]}), CHAT, v, policy=policy).solve(Q, budget=CHAIN + 3 * each)
    assert rich.answer == "9" and rich.tree.children[1].text.startswith("best_of_n with a budget of")


def test_adaptive_with_a_verifier_reads_scores_and_delegates_hard_questions_to_beam_search():
    world = WorldEngine([f"{p}1\n{p}2</think>{k}<|end|>" for k, p in enumerate("abcd")])
    low = TableVerifier({}, default=0.1)  # disagreement and low scores: hard -> beam
    th = Adaptive(world, CHAT, low).solve(Q, budget=3000)
    probe, follow = th.tree.children
    assert "mean score 0.10" in probe.text and "-> hard: beam" in probe.text
    assert follow.text.startswith("beam with a budget of") and follow.children and follow.chosen
    assert th.usage.completion_tokens - world.generated in (0, 1)  # 1: a think-close written to force an answer
    sure = TableVerifier({}, default=1.0)  # agreement 0.75, every chain scored 1: easy
    w2 = WorldEngine([f"{p}1\n{p}2</think>{k % 2}<|end|>" for k, p in enumerate("abcd")])
    easy = Adaptive(w2, CHAT, sure).solve(Q, budget=3000)
    assert "-> easy: stop" in easy.tree.children[0].text and len(easy.tree.children) == 1


def test_weighted_pooling_picks_the_heaviest_answer_not_the_most_common():
    world = WorldEngine(["a1</think>5<|end|>", "b1</think>5<|end|>", "c1</think>7<|end|>", "d1</think>7<|end|>"])
    v = TableVerifier({"=5": 0.2, "=7": 0.9})
    policy = AdaptivePolicy(tiers=(Tier("all", 1.0, "stop"),))
    th = Adaptive(world, CHAT, v, policy=policy).solve(Q)  # probe: a1 (greedy), a1, b1, c1 -> 5 x3 (0.6) < 7 (0.9)
    assert th.answer == "7"




@settings(max_examples=120, deadline=None)
@given(budget=st.one_of(st.none(), st.integers(1, 600)), verified=st.booleans(),
       kind=st.sampled_from(["table", "sample", "beam", "mcts", "dvts", "revise", "best_of_n", "revise itself"]),
       scores=st.lists(st.floats(0, 1), min_size=30, max_size=30), reserve=st.sampled_from([0, 8]))
def test_adaptive_and_revise_never_generate_past_the_budget(budget, verified, kind, scores, reserve):
    world = WorldEngine(WORLD, fallback="1<|end|>")
    steps = sorted({s for c in WORLD for s in c.split("</think>")[0].split("\n")})
    v = TableVerifier(dict(zip(steps, scores))) if verified else None
    # "table": the default policy; otherwise every question goes to one action, whatever the probe says
    policy = None if kind == "table" else AdaptivePolicy(tiers=(Tier("all", 1.0, kind, chains=9, params={}),))
    if kind == "revise itself":
        strategy = Revise(world, CHAT, v, n=3, max_tokens=200)
    else:
        strategy = Adaptive(world, CHAT, v, policy=policy, max_tokens=200, answer_reserve=reserve)
    th = strategy.solve(Q, budget)
    u = th.usage
    if budget is not None:
        assert u.completion_tokens <= budget
    # think-close markers written to force an answer: step search's, and with a reserve the probe's and a
    # delegated whole-chain strategy's
    assert u.completion_tokens - world.generated in ((0, 1, 2) if reserve else (0, 1))
    assert 0 <= u.answer_tokens <= u.completion_tokens
    assert th.answer or th.finish_reason == "length"
    assert Thought.from_json(th.to_json()) == th


def test_difficulty_estimate():
    assert estimate(["5", "5", "5", "7"], None, 0.5) == (0.25, 0.75, None)
    assert estimate(["5", None, None, None], None, 0.5)[0] == 0.75  # no answer agrees with nothing
    assert estimate([None, None], None, 0.5)[0] == 1.0 and estimate([], None, 0.5)[0] == 1.0
    d, a, m = estimate(["5", "5", "7", None], [1.0, 0.5, 0.0, 0.9], 0.5)
    assert a == 0.5 and m == pytest.approx(0.375) and d == pytest.approx(1 - 0.4375)


def test_a_policy_is_data_that_a_user_changes():
    p = AdaptivePolicy.from_dict({"probe": 2, "tiers": [{"name": "sure", "upto": 0.0}, {
        "name": "rest", "upto": 1.0, "action": "sample", "chains": 3}]})
    engine = VoteEngine({Q: ["5", "7", "5", "7"]})
    th = Adaptive(engine, CHAT, policy=p).solve(Q)
    assert th.usage.completion_tokens == 3 * CHAIN and "-> rest: sample" in th.tree.children[0].text
    assert p.tier(0.0).name == "sure" and p.tier(0.01).name == "rest"


@pytest.mark.parametrize("make, message", [
    (lambda: AdaptivePolicy(probe=0), "probe must be >= 1"),
    (lambda: AdaptivePolicy(tiers=(Tier("a", 0.5),)), "must cover difficulty 1.0"),
    (lambda: AdaptivePolicy(tiers=(Tier("a", 0.5), Tier("b", 0.4), Tier("c", 1.0))), "larger upto"),
    (lambda: AdaptivePolicy(tiers=(Tier("a", 1.0, "adaptive"),)), "cannot delegate to adaptive"),
    (lambda: AdaptivePolicy.from_dict({"probes": 3}), "unknown field 'probes'"),
    (lambda: AdaptivePolicy.from_dict({"tiers": [{"name": "x", "upto": 1, "colour": 2}]}), "bad tier"),
    (lambda: Adaptive(VoteEngine({}), CHAT, policy=AdaptivePolicy(tiers=(Tier("a", 1.0, "nosuch"),))),
     "unknown action 'nosuch'"),
    (lambda: Adaptive(VoteEngine({Q: ["5"]}), CHAT).solve(Q, 0), "budget must be >= 1"),
    (lambda: Revise(VoteEngine({}), CHAT, n=0), "n >= 1"),
    (lambda: Revise(VoteEngine({}), CHAT, accept=0.9), "needs a verifier"),
    (lambda: Revise(VoteEngine({Q: ["5"]}), CHAT).solve(Q, -3), "budget must be >= 1"),
    (lambda: build_strategy("adaptive", VoteEngine({}), CHAT, n=3), "strategy 'adaptive'"),
    (lambda: scaled_params("beam", 0), "chains must be >= 1"),
])
def test_bad_parameters_give_a_clear_error(make, message):
    with pytest.raises(PonderError, match=message):
        make()


# -- revise --------------------------------------------------------------------------------


def test_revise_shows_the_earlier_answers_and_picks_by_verifier_not_by_order():
    engine = VoteEngine({Q: ["5", "7"]})  # the first attempt is right, the revision wrong
    th = Revise(engine, CHAT, TableVerifier({"=5": 0.9, "=7": 0.2}), n=2).solve(Q)
    assert th.answer == "5"
    assert engine.calls[1][0] == [CHAT.revision_prompt(Q, ["5"])]
    assert engine.calls[1][0][0].endswith("5<|end|><|user|>Your answer may be wrong. Think again.<|assistant|><think>")
    first = th.tree.children[0]
    assert first.chosen and first.children[0].answer == "7" and not first.children[0].chosen
    assert th.usage.completion_tokens == engine.generated == 2 * CHAIN and th.usage.engine_calls == 2
    assert th.usage.prompt_tokens == sum(len(tokens(c[0][0])) for c in engine.calls)
    later = Revise(VoteEngine({Q: ["5", "7"]}), CHAT, TableVerifier({"=5": 0.2, "=7": 0.9}), n=2).solve(Q)
    assert later.answer == "7"  # the scores decide, whichever attempt it is


def test_revise_without_a_verifier_votes_over_attempts():
    assert Revise(VoteEngine({Q: ["5", "7", "7"]}), CHAT, n=3).solve(Q).answer == "7"
    assert Revise(VoteEngine({Q: ["5", "7"]}), CHAT, n=2).solve(Q).answer == "5"  # a tie: the earlier attempt


def test_revise_shares_the_budget_over_attempts_and_stops_when_accepted():
    engine = VoteEngine({Q: ["5", "7", "8", "9"]})
    th = Revise(engine, CHAT, n=4).solve(Q, budget=2 * CHAIN)  # half a chain each: nobody answers
    assert th.answer == "" and th.finish_reason == "length" and th.budget_exhausted
    assert th.usage.completion_tokens <= 2 * CHAIN
    sure = Revise(VoteEngine({Q: ["5", "7"]}), CHAT, TableVerifier({"=5": 0.95}), n=4, accept=0.9).solve(Q)
    assert sure.answer == "5" and sure.usage.engine_calls == 1


def test_revise_stops_revising_where_the_earlier_answers_fill_the_context():
    """A question that fits gets its first attempt and keeps it; revising it would ask past the context (in a
    batch, other questions go on revising: one long question must not fail them all)."""
    long_q = Q + " And " + "why " * 8
    engine = VoteEngine({Q: ["5", "7", "7"], long_q: ["4", "6", "6"]})
    engine.max_positions = engine.count_tokens(CHAT.revision_prompt(long_q, ["4"])) - 1
    assert engine.count_tokens(CHAT.prompt(long_q)) + CHAIN <= engine.max_positions
    th = Revise(engine, CHAT, n=3, context=1).solve_batch([Q, long_q])
    assert [t.answer for t in th] == ["7", "4"]
    assert [len(list(t.tree.walk())) - 1 for t in th] == [3, 1]  # attempts made


# -- revision training data ----------------------------------------------------------------


def test_revision_pairs_come_from_wrong_attempts_only_and_carry_the_correct_reference():
    p = Problem("add", 1, "What is 2 + 3?", "5", ("2 + 3 = 5",))
    q = Problem("add", 1, "What is 1 + 1?", "2", ("1 + 1 = 2",))
    attempts = [[Attempt(["2 + 3 = 6"], "6"), Attempt(["2 + 3 = 5"], "5"), Attempt(["x"], None),
                 Attempt(["2 + 3 = 6"], "6"), Attempt(["2 + 3 = 4"], "4")],
                [Attempt(["1 + 1 = 2"], "2")]]
    ex = revision_examples(CHAT, [p, q], attempts, per_problem=3, context=2)
    assert [e.wrong_answers for e in ex] == [["6"], ["6", "4"]]  # distinct wrong answers; right/unanswered skipped
    assert all(e.completion == CHAT.completion(p.steps, "5") and e.expected == "5" and not e.own for e in ex)
    assert ex[1].prompt == CHAT.revision_prompt(p.question, ["6", "4"])
    own = revision_examples(CHAT, [p], attempts[:1], target="own")
    assert own[0].own and own[0].completion == CHAT.completion(["2 + 3 = 5"], "5")
    from ponder.model.tokenizer import build_char_tokenizer

    ids, start = encode(ex[:1], build_char_tokenizer())[0]
    assert start == len(tokens(ex[0].prompt)) and len(ids) == start + len(tokens(ex[0].completion))
    with pytest.raises(PonderError, match="target must be"):
        revision_examples(CHAT, [p], attempts[:1], target="mine")


def test_ask_with_adaptive_and_revise_on_a_real_tiny_model(micro_dir, tmp_path, capsys):
    import json

    from ponder.cli import main

    for name in ("adaptive", "revise"):
        assert main(["ask", "What is 2 + 3?", "--model", str(micro_dir), "--strategy", name, "--budget", "40",
                     "--max-tokens", "16", "--json", "--show-tree"]) == 0
        d = json.loads(capsys.readouterr().out)
        assert d["usage"]["completion_tokens"] <= 40 and d["tree"]["children"]
    (tmp_path / "policy.yaml").write_text("probe: 2\ntiers:\n  - {name: any, upto: 1.0, action: stop}\n")
    ask = ["ask", "What is 2 + 3?", "--model", str(micro_dir), "--max-tokens", "8", "--show-tree"]
    assert main(ask + ["--strategy", "adaptive", "--policy", str(tmp_path / "policy.yaml")]) == 0
    assert "-> any: stop" in capsys.readouterr().out
    for extra, message in ((["--strategy", "revise", "--policy", str(tmp_path / "policy.yaml")], "--policy is for"),
                           (["--strategy", "adaptive", "--policy", str(tmp_path / "none.yaml")], "does not exist"),
                           (["--strategy", "adaptive", "-n", "3"], "strategy 'adaptive'")):
        assert main(ask + extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("effort, most", [("medium", 8), ("high", 16)])
def test_adaptive_effort_presets_stop_on_agreement_and_cap_their_chains(effort, most):
    from ponder.think.effort import strategy_for_effort

    agree = VoteEngine({Q: ["5"] * 100})
    th = strategy_for_effort(effort, agree, CHAT, preset="adaptive").solve(Q)
    assert th.answer == "5" and agree.generated == 4 * CHAIN  # the probe agreed: nothing more
    split = VoteEngine({Q: ["1", "2", "3", "4", "5", "6", "7"] * 10})  # never agrees
    th = strategy_for_effort(effort, split, CHAT, preset="adaptive").solve(Q)
    assert split.generated == th.usage.completion_tokens == most * CHAIN
    vote = VoteEngine({Q: ["5"] * 100})
    strategy_for_effort(effort, vote, CHAT, preset="vote").solve(Q)  # votes over a fixed number of chains
    assert vote.generated == {"medium": 5, "high": 16}[effort] * CHAIN
    default = VoteEngine({Q: ["5"] * 100})
    strategy_for_effort(effort, default, CHAT).solve(Q)  # what ask and serve use: medium adapts, high votes
    assert default.generated == {"medium": 4, "high": 16}[effort] * CHAIN
    with pytest.raises(PonderError, match="unknown effort preset 'fast'"):
        strategy_for_effort(effort, vote, CHAT, preset="fast")


def test_with_an_answer_reserve_a_probe_the_budget_cuts_still_answers():
    world = WorldEngine(["a\nb\nc\nd\ne\nf</think>9<|end|>"], fallback="7<|end|>")
    assert Adaptive(world, CHAT, max_tokens=200).solve(Q, 12).answer == ""
    th = Adaptive(world, CHAT, max_tokens=200, answer_reserve=4).solve(Q, 12)
    assert th.answer == "7" and th.reasoning == "a\nb\nc\nd" and th.budget_exhausted
    assert th.usage.completion_tokens == 12
    with pytest.raises(PonderError, match="answer_reserve must be >= 0"):
        Adaptive(world, CHAT, answer_reserve=-1)


def test_adaptives_sampled_chains_are_the_questions_first_samples_at_its_seed(micro_dir):
    """Its waves go on with a question's samples where the last one stopped, so its chains are the ones
    best_of_n and majority draw at the same seed, and `eval policy`'s replay of drawn samples is exact."""
    from ponder.engine.local import LocalEngine
    from ponder.model.loading import load_model
    from ponder.think.base import split_completion

    model, tok, chat = load_model(str(micro_dir))
    engine = LocalEngine(model, tok)
    policy = AdaptivePolicy(probe=3, wave=2, tiers=(Tier("all", 1.0, "sample", chains=6),))
    th = Adaptive(engine, chat, policy=policy, max_tokens=10, seed=5).solve(Q)
    sampled = [n.text for phase in th.tree.children for n in phase.children][1:]  # the greedy chain first
    prompt = Adaptive(engine, chat).prompt_of(Q)
    direct = engine.generate([prompt], SamplingParams(n=5, temperature=0.8, max_tokens=10, seed=5))[0]
    assert len(sampled) == 5 and sampled == [split_completion(chat, engine, c)[0] for c in direct]
