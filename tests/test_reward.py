"""Reward models: Monte-Carlo step labels, aggregation, the scalar head's positions, saving, training."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from ponder import PonderError
from ponder.engine.base import Completion, SamplingParams, cut_at_stop
from ponder.model.chat import ChatFormat
from ponder.reward import RewardModel, aggregate, rate
from ponder.tasks import Problem
from ponder.train.prm import PRMConfig, batch_loss, body_features, train_prm
from ponder.train.prm_data import (
    LabelledChain,
    label_problems,
    label_summary,
    prefix_texts,
    split_chain,
)

pytestmark = pytest.mark.usefixtures("one_thread")
CHAT = ChatFormat()
TOKEN = re.compile(r"<\|end\|>|</think>|<think>|<\|user\|>|<\|assistant\|>|.", re.S)


class ScriptEngine:
    """Continues a prompt with the scripted completions that extend what is written after `<think>`,
    sample j taking the j-th (wrapping); `cut` caps a completion's characters (a truncated answer)."""

    def __init__(self, chains: list[str]) -> None:
        self.chains, self.rows = chains, []

    def count_tokens(self, text: str) -> int:
        return len(TOKEN.findall(text))

    def generate(self, prompts, params: SamplingParams, on_step=None):
        out = []
        for p in prompts:
            written = p.split("<think>", 1)[1]
            self.rows.append(written)
            options = [c[len(written):] for c in self.chains if c.startswith(written)]
            group = []
            for j in range(params.n):
                text, stop = cut_at_stop(options[j % len(options)], params.stop)
                toks = TOKEN.findall(text)[: params.max_tokens]
                finish = "eos" if text.endswith("<|end|>") and len(toks) == len(TOKEN.findall(text)) else "length"
                group.append(Completion("".join(toks), list(range(len(toks))), finish, 0, stop))
            out.append(group)
        return out


GOOD = "good1\ngood2</think>7<|end|>"
BAD = "good1\nbad2</think>3<|end|>"
PROBLEM = Problem("add", 1, "What is 3 + 4?", "7")


def test_monte_carlo_labels_are_the_fraction_and_the_any_of_rollouts_that_end_correct():
    # the policy writes GOOD three times in four, BAD once: after good1, 3 of 4 rollouts end right
    engine = ScriptEngine([GOOD, GOOD, GOOD, BAD])
    chains = label_problems(engine, CHAT, [PROBLEM], chains_per_problem=4, rollouts=4, temperature=1.0,
                            max_tokens=64, seed=0)
    assert [(c.steps, c.answer, c.correct) for c in chains] == [(["good1", "good2"], "7", True),
                                                               (["good1", "bad2"], "3", False)]  # duplicates dropped
    good, bad = chains
    assert good.soft == [0.75, 1.0] and good.hard == [1.0, 1.0]
    assert bad.soft == [0.75, 0.0] and bad.hard == [1.0, 0.0]
    # the shared prefix `good1` was rolled out once; the last step's prefix closes the thinking
    assert engine.rows.count("good1\n") == 1 and "good1\nbad2</think>" in engine.rows
    assert good.targets("prm", "soft") == [0.75, 1.0, 1.0] and bad.targets("prm", "hard") == [1.0, 0.0, 0.0]
    assert good.targets("orm", "soft") == [1.0] and bad.targets("orm", "hard") == [0.0]


def test_a_rollout_whose_answer_the_cap_cut_does_not_count_as_correct():
    engine = ScriptEngine(["s1</think>1234<|end|>"])
    chains = label_problems(engine, CHAT, [Problem("add", 1, "What is 12 + 0?", "12")], 1, 2, 1.0,
                            max_tokens=2, seed=0)  # a rollout from `s1</think>` writes "12" and is cut there
    assert chains[0].answer is None and chains[0].soft == [0.0] and not chains[0].correct
    assert split_chain(CHAT, "a\nb</think>5<|end|>") == (["a", "b"], "5")
    assert split_chain(CHAT, "a\nb") == (["a", "b"], None)
    assert prefix_texts(CHAT, ["a", "b", "c"]) == ["a\n", "a\nb\n", "a\nb\nc</think>"]


def test_label_summary_counts_where_a_verifier_can_choose_and_wrong_chains_without_a_wrong_line():
    def chain(q, steps, ok):
        return LabelledChain(q, "1", steps, "1" if ok else "0", ok)

    chains = [chain("A", ["a", "b", "c"], True), chain("A", ["a", "b"], False),  # stops early: no wrong line
              chain("A", ["a", "b", "c", "d"], False),  # runs on past the right stop: no wrong line either
              chain("A", ["a", "x"], False),  # a wrong line
              chain("B", ["a"], True), chain("B", ["b"], True), chain("C", ["a"], False)]
    assert label_summary(chains) == {"problems": 3, "problems_disagreeing": 1, "wrong_chains_there": 3,
                                     "wrong_with_right_lines": 2}


def test_checked_labels_hold_up_to_the_first_wrong_step_and_need_a_task_that_checks():
    from ponder.train.prm_data import check_labels

    q = "Evaluate: a=1 b=0 c=a&b d=!c e=d|b ?e"  # c=0 d=1 e=1
    chains = [LabelledChain(q, "1", ["c=1&0=0", "d=!0=1", "e=1|0=1"], "1", True),
              LabelledChain(q, "1", ["c=1&0=1", "d=!1=1", "e=1|0=1"], "1", True)]  # right answer after a slip
    check_labels("cvp", chains)
    assert [c.checked for c in chains] == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    assert chains[1].targets("prm", "checked") == [0.0, 0.0, 0.0, 1.0]  # the answer's own label stays its outcome
    check_labels("cvp", chains, each=True)
    assert [c.checked for c in chains] == [[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]  # d and e carry their true values
    with pytest.raises(PonderError, match="checks its own steps"):
        check_labels("isq", [LabelledChain("What is 3^(2^1) mod 97?", "9", ["3^2=9"], "9", True)])
    with pytest.raises(PonderError, match="'label'.*isq"):
        PRMConfig(label="checked", task="isq", levels=[1])


def test_held_out_step_accuracy_is_judged_against_the_labels_trained_on():
    from ponder.train.prm import evaluate_verifier

    class Says:  # a verifier that calls every step right and every answer right
        aggregation = "min"

        def encode(self, question, steps, answer):
            return len(steps) + 1

        def logits(self, encoded):
            return [torch.full((n,), 5.0) for n in encoded]

    chain = LabelledChain("q", "1", ["s1", "s2"], "1", True, soft=[1.0, 1.0], hard=[1.0, 1.0], checked=[1.0, 0.0])
    assert evaluate_verifier(Says(), [chain], "prm", "hard")["eval/step_acc"] == 1.0
    assert evaluate_verifier(Says(), [chain], "prm", "checked")["eval/step_acc"] == 0.5


def test_training_says_when_few_problems_leave_a_verifier_a_choice(capsys):
    from ponder.train.prm import _warn_if_little_to_choose

    _warn_if_little_to_choose({"problems": 1511, "problems_disagreeing": 108})
    assert "only 108 of 1511 labelled problems" in capsys.readouterr().err
    _warn_if_little_to_choose({"problems": 2043, "problems_disagreeing": 1476})
    assert capsys.readouterr().err == ""


def test_aggregation_by_hand():
    scores = [0.9, 0.5, 0.8]
    assert aggregate(scores, "last") == 0.8
    assert aggregate(scores, "min") == 0.5
    assert aggregate(scores, "prod") == pytest.approx(0.9 * 0.5 * 0.8)
    assert aggregate([], "min") == 1.0 and aggregate([], "last") == 0.5
    with pytest.raises(PonderError, match="unknown score aggregation 'mean'"):
        aggregate(scores, "mean")


@pytest.fixture(scope="module")
def rm(micro_dir):
    return RewardModel.from_policy(micro_dir, kind="prm", seed=0)


def test_the_head_reads_each_step_boundary_and_the_answer_end(rm):
    q, steps = "What is 3 + 4?", ["3+4=7", "ok"]
    enc = rm.encode(q, steps, "7")
    tok = rm.tokenizer
    prompt = CHAT.prompt(q)
    expected = [len(tok(prompt + t, add_special_tokens=False)["input_ids"]) - 1
                for t in ("3+4=7\n", "3+4=7\nok</think>", "3+4=7\nok</think>7<|end|>")]
    assert enc.positions == expected
    assert [tok.convert_ids_to_tokens(enc.ids[p]) for p in enc.positions] == ["\n", "</think>", "<|end|>"]
    # the score at a position is the head on the body's hidden state there, nothing else
    with torch.no_grad():
        hidden = rm.model.base_model(input_ids=torch.tensor([enc.ids])).last_hidden_state[0]
        manual = torch.sigmoid(rm.head(hidden[expected]).squeeze(-1)).tolist()
    assert rm.score(q, steps, "7") == pytest.approx(manual, abs=1e-5)
    assert len(rm.score(q, steps)) == 2 and len(rm.score(q, [], "7")) == 1


def test_scores_do_not_depend_on_batching_or_on_what_comes_later(rm):
    qs = ["What is 3 + 4?", "What is 12 + 30?", "Hi"]
    chains = [["3+4=7"], ["2+0=2", "1+3=4", "so 42"], []]
    answers = ["7", None, "x"]
    batch = rm.score_batch(qs, chains, answers)
    for q, c, a, b in zip(qs, chains, answers, batch):
        assert rm.score(q, c, a) == pytest.approx(b, abs=1e-5)
    longer = rm.score(qs[1], chains[1] + ["more"], None)
    assert longer[:3] == pytest.approx(batch[1], abs=1e-5)  # a step's score sees only what came before it
    agg = rate(rm, qs, chains, answers, "min")
    assert agg == pytest.approx([min(s) for s in batch])


def test_candidates_sharing_a_prefix_score_as_they_would_whole_for_fewer_tokens(rm):
    """Step search scores each parent's candidates together; the shared part runs through the body once."""
    qs, chains, answers = [], [], []
    for q, parent in (("What is 3 + 4?", []), ("What is 12 + 30?", ["2+0=2", "1+3=4"]), ("Hi", ["a"])):
        for k, new in enumerate(["so 42", "so 24", "hmm", "2+0=2"]):
            qs.append(q)
            chains.append(parent + [new])
            answers.append("42" if k == 0 else None)
    rm.share_prefixes = False
    tokens = rm.stats.tokens
    whole = rm.score_batch(qs, chains, answers)
    whole_tokens, tokens = rm.stats.tokens - tokens, rm.stats.tokens
    rm.share_prefixes = True
    shared = rm.score_batch(qs, chains, answers)
    assert rm.stats.tokens - tokens < 0.6 * whole_tokens
    for a, b in zip(shared, whole):
        assert a == pytest.approx(b, abs=1e-5)
    lone = rm.score_batch(qs[:1], chains[:1], answers[:1])  # nothing shared: one pass, as before
    assert lone[0] == pytest.approx(whole[0], abs=1e-5)


def test_a_call_of_more_chains_than_one_pass_holds_scores_as_in_one_pass(rm, monkeypatch):
    """Thousands of chains in one call run in passes (a pass holds all it ran): the scores are the same."""
    qs = [f"What is {i} + {i}?" for i in range(3) for _ in range(4)]
    chains = [["1+1=2", f"so {k}"] for _ in range(3) for k in range(4)]
    answers = [str(k) for _ in range(3) for k in range(4)]
    one = rm.score_batch(qs, chains, answers)
    monkeypatch.setattr(rm, "pass_sequences", 5)  # passes that cut one question's chains apart
    if rm.kept is not None:
        rm.kept.clear()
    sizes, run = [], rm._hidden_extending
    monkeypatch.setattr(rm, "_hidden_extending", lambda enc, lens: sizes.append(len(enc)) or run(enc, lens))
    passes = rm.score_batch(qs, chains, answers)
    assert sizes == [5, 5, 2]
    for a, b in zip(passes, one):
        assert a == pytest.approx(b, abs=1e-5)


def _whole(rm, qs, chains, answers):
    """Scores with every chain run whole, nothing kept or shared."""
    share, kept = rm.share_prefixes, rm.kept
    rm.share_prefixes, rm.kept = False, None
    try:
        return rm.score_batch(qs, chains, answers)
    finally:
        rm.share_prefixes, rm.kept = share, kept


@pytest.mark.parametrize("keep_mb", [256, 0.004])
def test_a_step_search_call_runs_only_the_new_steps_of_chains_scored_before(micro_dir, keep_mb):
    """Beam search's pattern: each call's candidates extend the last call's; a budget too small to keep
    them (0.004 MB) costs tokens, never correctness."""
    rm = RewardModel.from_policy(micro_dir, kind="prm", seed=0, keep_mb=keep_mb)
    qs = ["What is 3 + 4?", "What is 12 + 30?"]
    parents = [["3+4=7"], ["2+0=2"]]
    rm.score_batch(qs, parents, [None, None])
    before = rm.stats.tokens
    cands = [p + [new] for p in parents for new in ("1+3=4", "so 42", "hmm")]
    cq = [q for q in qs for _ in range(3)]
    got = rm.score_batch(cq, cands, [None] * 6)
    new_tokens = sum(len(rm.encode(q, c).ids) - len(rm.encode(q, c[:-1]).ids) for q, c in zip(cq, cands))
    assert (rm.stats.tokens - before == new_tokens) == (keep_mb == 256)
    for a, b in zip(got, _whole(rm, cq, cands, [None] * 6)):
        assert a == pytest.approx(b, abs=1e-5)


def test_kept_prefixes_are_dropped_when_the_weights_change(micro_dir):
    rm = RewardModel.from_policy(micro_dir, kind="prm", seed=0)
    q, chain = ["What is 3 + 4?"], [["3+4=7", "ok"]]
    rm.score_batch(q, [chain[0][:1]], [None])
    with torch.no_grad():
        for p in rm.model.base_model.parameters():
            p.mul_(1.05)  # an optimizer step, as far as the kept keys and values are concerned
    assert rm.score_batch(q, chain, ["7"]) == [pytest.approx(_whole(rm, q, chain, ["7"])[0], abs=1e-5)]


def test_a_frozen_body_trains_the_head_on_cached_features_with_the_same_loss(rm, tmp_path):
    lines = _labels(tmp_path / "l.jsonl").read_text().splitlines()[:6]
    chains = [LabelledChain.from_dict(json.loads(line)) for line in lines]
    for kind in ("prm", "orm"):
        with torch.no_grad():
            direct, n = batch_loss(rm, chains, kind, "soft")
            cached, m = batch_loss(rm, chains, kind, "soft", body_features(rm, chains))
        assert n == m == (18 if kind == "prm" else 6) and float(cached) == pytest.approx(float(direct), abs=1e-5)


def test_save_and_load_give_the_same_scores(rm, tmp_path):
    before = rm.score("What is 3 + 4?", ["3+4=7"], "7")
    rm.save(tmp_path / "rm")
    back = RewardModel.load(tmp_path / "rm")
    assert back.kind == "prm" and back.aggregation == "last"
    assert back.score("What is 3 + 4?", ["3+4=7"], "7") == pytest.approx(before, abs=1e-6)
    assert json.loads((tmp_path / "rm" / "config.json").read_text())["architectures"] == ["LlamaForTokenClassification"]
    with pytest.raises(PonderError, match="not a reward model directory"):
        RewardModel.load(tmp_path)


def _labels(path):
    """Learnable labels: a step that says `ok` leads to a right answer, one that says `no` does not."""
    rows = []
    for i in range(40):
        q = f"Is {i} fine?"
        for good in (True, False):
            steps = [f"{i} looks", "ok" if good else "no"]
            rows.append(LabelledChain(q, "yes", steps, "yes" if good else "nope", good,
                                      soft=[0.5, 1.0 if good else 0.0], hard=[1.0, 1.0 if good else 0.0]).to_dict())
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(tmp_path, micro_dir, name, **kw):
    base = dict(output_dir=str(tmp_path / name), policy=str(micro_dir), labels_path=str(_labels(tmp_path / "l.jsonl")),
                max_steps=40, per_device_train_batch_size=8, learning_rate=3e-2, warmup_steps=0,
                lr_scheduler_type="constant", eval_fraction=0.2, eval_steps=40, logging_steps=5, save_steps=20,
                torch_threads=1)
    base.update(kw)
    return PRMConfig(**base)


def test_training_fits_the_labels_and_the_saved_model_scores_good_steps_higher(tmp_path, micro_dir):
    final = train_prm(_cfg(tmp_path, micro_dir, "prm", train_body=True, body_learning_rate=3e-3))
    records = [json.loads(line) for line in (tmp_path / "prm" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["problems"] == records[0]["problems_disagreeing"] == 40
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < 0.5 * losses[0]
    evals = [r for r in records if "eval/loss" in r]
    assert evals and evals[-1]["eval/select_acc"] == 1.0
    rm = RewardModel.load(final)
    ok, no = rm.score("Is 7 fine?", ["7 looks", "ok"], "yes"), rm.score("Is 7 fine?", ["7 looks", "no"], "nope")
    assert ok[1] > 0.8 and no[1] < 0.2


def test_an_orm_trains_only_the_final_position_and_resume_continues_exactly(tmp_path, micro_dir):
    train_prm(_cfg(tmp_path, micro_dir, "cut", kind="orm", max_steps=20, save_steps=10))
    resumed = train_prm(_cfg(tmp_path, micro_dir, "cut", kind="orm", max_steps=30, save_steps=10), resume=True)
    straight = train_prm(_cfg(tmp_path, micro_dir, "straight", kind="orm", max_steps=30, save_steps=10))
    a, b = load_file(resumed / "model.safetensors"), load_file(straight / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert RewardModel.load(resumed).kind == "orm" and RewardModel.load(resumed).aggregation == "last"
    def losses(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["loss"]) for r in map(json.loads, lines) if "loss" in r]

    assert losses("cut") == losses("straight")  # nothing lost, nothing logged twice
    with pytest.raises(PonderError, match="--resume"):
        train_prm(_cfg(tmp_path, micro_dir, "cut", kind="orm"))


def test_the_best_evaluation_is_the_final_model_and_patience_stops_training_for_good(tmp_path, micro_dir):
    # Ranked by the highest held-out loss, the best model is the first one evaluated: the loss falls.
    kw = dict(eval_steps=10, save_steps=10, max_steps=50, metric_for_best_model="loss", greater_is_better=True)
    cfg = _cfg(tmp_path, micro_dir, "best", load_best_model_at_end=True, early_stopping_patience=2, **kw)
    final = train_prm(cfg)

    def records():
        return [json.loads(line) for line in (tmp_path / "best" / "metrics.jsonl").read_text().splitlines()]

    assert max(r["step"] for r in records() if "loss" in r) == 30  # two evaluations without a new best
    assert json.loads((tmp_path / "best" / "best.json").read_text())["step"] == 10
    assert records()[-1]["early_stop"] == "no better loss in 2 evaluations since step 10"
    first = train_prm(_cfg(tmp_path, micro_dir, "first", **{**kw, "max_steps": 10}))
    a, b = load_file(final / "model.safetensors"), load_file(first / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    before = records()
    train_prm(cfg, resume=True)  # a stopped run stays stopped
    assert records() == before
    with pytest.raises(PonderError, match="held-out evaluations"):
        PRMConfig(load_best_model_at_end=True, eval_fraction=0.0)


@pytest.mark.parametrize("field, value, message", [
    ("rollouts", 0, "rollouts"), ("sample_temperature", 0.0, "sampling"), ("levels", [99], "levels"),
    ("eval_fraction", 1.0, "eval_fraction"), ("learning_rate", -1.0, "learning_rate"),
    ("metric_for_best_model", "accuracy", "metric_for_best_model"),
    ("early_stopping_patience", 0, "early_stopping_patience"),
])
def test_bad_config_is_refused_naming_the_field(field, value, message):
    with pytest.raises(PonderError, match=message):
        PRMConfig(**{field: value})
