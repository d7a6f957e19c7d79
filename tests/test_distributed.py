"""GRPO and STaR under torchrun: two CPU processes (gloo) stay in sync, rank 0 alone writes, a resumed run goes on."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ponder.train.distributed import Dist, init

MIX = [{"task": "add", "levels": [1]}, {"task": "modadd", "levels": [1]}]

# Runs on every rank: GRPO as `ponder train grpo` would, with a hash of the weights after every step.
WORKER = textwrap.dedent("""
    import faulthandler, hashlib, json, os, sys
    faulthandler.dump_traceback_later(150, exit=True)  # a hung rank prints where it waits, and the test fails
    import ponder.train.grpo as grpo

    cfg, resume, tag = json.loads(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
    hashes, real = [], grpo.optimizer_step

    def spy(model, *a, **k):
        out = real(model, *a, **k)
        h = hashlib.sha256()
        for p in model.parameters():
            h.update(p.detach().cpu().numpy().tobytes())
        hashes.append(h.hexdigest())
        return out

    grpo.optimizer_step = spy
    grpo.train_grpo(grpo.GRPOConfig(**cfg), resume=resume)
    with open(os.path.join(sys.argv[4], f"hashes-{tag}-rank{os.environ['RANK']}.json"), "w") as f:
        json.dump(hashes, f)
""")


def _launch(tmp_path, cfg: dict, resume: bool, tag: str, worker: str = WORKER) -> None:
    script = tmp_path / f"worker-{tag}.py"
    script.write_text(worker)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           json.dumps(cfg), "1" if resume else "0", tag, str(tmp_path)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]


def _hashes(tmp_path, tag: str, rank: int) -> list[str]:
    return json.loads((tmp_path / f"hashes-{tag}-rank{rank}.json").read_text())


def test_two_ranks_stay_in_sync_and_resume(tmp_path, micro_dir):
    run = tmp_path / "run"
    cfg = dict(output_dir=str(run), model=str(micro_dir), mixture=MIX, num_generations=4,
               per_device_train_batch_size=4, gradient_accumulation_steps=2, max_completion_length=48,
               learning_rate=1e-2, length_penalty=0.5, dynamic_sampling="skip", curriculum=True,
               curriculum_window=8, max_steps=2, save_steps=2, bf16=False, torch_threads=1)
    _launch(tmp_path, cfg, resume=False, tag="first")
    _launch(tmp_path, cfg | {"max_steps": 3}, resume=True, tag="resumed")
    for tag, steps in (("first", 2), ("resumed", 1)):
        h0, h1 = _hashes(tmp_path, tag, 0), _hashes(tmp_path, tag, 1)
        assert len(h0) == steps and h0 == h1  # identical weights on both ranks after every step
    assert len(set(_hashes(tmp_path, "first", 0) + _hashes(tmp_path, "resumed", 0))) == 3  # and they moved
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]  # one writer: no step logged twice
    # rollouts of both ranks are counted: 2 prompts x 4 generations per rank
    assert all(r["groups_generated"] == 4 for r in records)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-2", "checkpoint-3", "metrics.jsonl", "model"]


STAR_WORKER = textwrap.dedent("""
    import faulthandler, hashlib, json, os, sys
    faulthandler.dump_traceback_later(150, exit=True)
    import ponder.train.star as star

    hashes, real = [], star.new_optimizer

    def spy(cfg, model):
        def after_step(opt, args, kwargs):
            h = hashlib.sha256()
            for p in model.parameters():
                h.update(p.detach().cpu().numpy().tobytes())
            hashes.append(h.hexdigest())
        opt = real(cfg, model)
        opt.register_step_post_hook(after_step)
        return opt

    star.new_optimizer = spy
    star.train_star(star.STaRConfig(**json.loads(sys.argv[1])))
    with open(os.path.join(sys.argv[4], f"hashes-{sys.argv[3]}-rank{os.environ['RANK']}.json"), "w") as f:
        json.dump(hashes, f)
""")


def test_star_ranks_share_the_questions_and_train_in_sync(tmp_path):
    run = tmp_path / "star"
    cfg = dict(output_dir=str(run), model="built-in", mixture=[{"task": "add", "levels": [1]}], rounds=2,
               questions_per_round=6, num_generations=2, max_completion_length=48, per_device_train_batch_size=2,
               learning_rate=1e-4, bf16=False, torch_threads=1, logging_steps=1)
    _launch(tmp_path, cfg, resume=False, tag="star", worker=STAR_WORKER)
    h0, h1 = _hashes(tmp_path, "star", 0), _hashes(tmp_path, "star", 1)
    rounds = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in rounds if "kept" in r]
    assert [r["round"] for r in rounds] == [1, 2] and all(r["questions"] == 6 for r in rounds)  # both shares
    assert len(h0) == sum(r["train_steps"] for r in rounds) > 0 and h0 == h1
    kept = (run / "rounds" / "round-001.jsonl").read_text().splitlines()[1:]
    assert len(kept) == rounds[0]["kept"]


def test_a_single_process_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d = init()
    assert d == Dist() and d.is_main and not d.enabled
    assert d.gather({"a": 1}) == [{"a": 1}] and d.sum({"a": 2}) == {"a": 2}


def test_world_size_without_rank_is_a_clear_error(monkeypatch):
    from ponder import PonderError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(PonderError, match="torchrun"):
        init()
