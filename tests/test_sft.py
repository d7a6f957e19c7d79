import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from ponder import PonderError
from ponder.config import load_config
from ponder.train.checkpoint import latest_checkpoint
from ponder.train.sft import SFTConfig, train_sft

MIX = [{"task": "modadd", "levels": [1]}, {"task": "add", "levels": [1, 2]}]


def tiny(out, **kw) -> SFTConfig:
    base = dict(output_dir=str(out), model="ponder-micro", mixture=MIX, max_steps=8, per_device_train_batch_size=4,
                gradient_accumulation_steps=2, learning_rate=3e-3, lr_scheduler_type="constant", warmup_steps=0,
                logging_steps=1, save_steps=2, bf16=False, max_length=128, torch_threads=1)
    base.update(kw)
    return SFTConfig(**base)


def test_sft_lowers_the_loss_and_writes_a_loadable_model(tmp_path):
    final = train_sft(tiny(tmp_path / "run", max_steps=40, save_steps=100))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert (final / "model.safetensors").exists() and (final / "tokenizer.json").exists()


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(json.dumps({**tiny(tmp_path / "killed").__dict__, "max_steps": 100000, "save_steps": 3}))
    cmd = [sys.executable, "-m", "ponder", "train", "sft", "--config", str(cfg_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while latest_checkpoint(tmp_path / "killed") is None or int(latest_checkpoint(tmp_path / "killed").name.split("-")[1]) < 6:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resume_from = int(latest_checkpoint(tmp_path / "killed").name.split("-")[1])
    end = resume_from + 3
    done = subprocess.run(cmd + ["--resume", "--set", f"max_steps={end}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    train_sft(tiny(tmp_path / "straight", max_steps=end))
    a = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    b = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, end + 1))  # nothing lost, nothing logged twice


def test_existing_checkpoints_are_not_overwritten_without_resume(tmp_path):
    train_sft(tiny(tmp_path / "run", max_steps=2))
    with pytest.raises(PonderError, match="--resume"):
        train_sft(tiny(tmp_path / "run", max_steps=2))


@pytest.mark.parametrize("text, field", [
    ("max_stepz: 3", "max_stepz"),
    ("max_steps: three", "max_steps"),
    ("lr_scheduler_type: wavy", "lr_scheduler_type"),
    ("learning_rate: -1", "learning_rate"),
    ("mixture: [{task: add, levels: [99]}]", "levels"),
    ("mixture: [{task: nosuch}]", "nosuch"),
    ("", "empty"),  # would otherwise train every default
    ("- 1\n- 2", "mapping"),
])
def test_bad_config_is_refused_naming_the_field(tmp_path, text, field):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(PonderError, match=field):
        load_config(SFTConfig, p)


def test_bf16_is_asked_of_a_device_only_where_it_computes_bf16_natively(monkeypatch):
    """Emulated bf16 is many times slower than float32: a config's bf16 falls back, with a warning."""
    from transformers import LlamaForCausalLM

    from ponder.model.configs import model_config
    from ponder.train import precision, sft

    torch.manual_seed(0)
    model = LlamaForCausalLM(model_config("ponder-micro", 40, 64))
    ids = torch.randint(3, 40, (2, 12))
    batches = [{"input_ids": ids, "labels": ids}]

    def loss(bf16: bool) -> float:
        model.zero_grad()
        return sft.step_loss(model, batches, bf16)[0]

    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    precision._warn_float32.cache_clear()
    with pytest.warns(UserWarning, match="no native bf16"):
        assert loss(True) == loss(False)
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert precision.use_bf16(True) and not precision.use_bf16(False)
    assert loss(True) != loss(False)  # bf16 really is used where it is native
