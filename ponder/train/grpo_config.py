"""GRPO's settings: TRL's `GRPOConfig` names and semantics where the concept is the same."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ponder import PonderError
from ponder.train.data import parse_mixture
from ponder.train.rollouts import check_engine


@dataclass
class GRPOConfig:
    """TRL-compatible names and semantics where the concept is the same. A step is one optimizer
    step over per_device_train_batch_size * gradient_accumulation_steps completions, i.e. that
    number / num_generations prompts; a batch is generated once and used for num_iterations steps.
    Under torchrun every rank generates that many prompts: the global batch is world_size times it."""

    output_dir: str = "runs/grpo"
    model: str = "built-in"  # `built-in` or a model directory (e.g. an SFT run's model/)
    mixture: list[dict] = field(default_factory=lambda: [{"task": "countdown", "levels": [1, 2]}])
    engine: Literal["local", "vllm"] = "local"  # what samples the rollouts (vllm: an optional extra)
    vllm_gpu_memory_utilization: float = 0.3  # engine vllm: its share of the GPU, beside the trainer
    num_generations: int = 8
    per_device_train_batch_size: int = 16  # completions per micro-batch
    gradient_accumulation_steps: int = 4
    # micro-batches generated at once; a multiple of gradient_accumulation_steps, which it defaults to
    # (one optimizer step per generated batch). More cuts one large batch, cheap to sample, into
    # several optimizer steps, each on whole groups, with the ratio to the sampling policy.
    steps_per_generation: int | None = None
    max_completion_length: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    num_iterations: int = 1
    beta: float = 0.0  # KL to the starting model; 0 loads no reference model
    epsilon: float = 0.2
    epsilon_high: float | None = None  # defaults to epsilon
    scale_rewards: Literal["group", "batch", "none"] = "group"
    # scales advantages below zero: 1 is GRPO; 0 learns only from completions better than their group
    # (rejection-sampling fine-tuning weighted by advantage), which keeps the wrong chains' shared
    # tokens from being pushed down with them
    negative_advantage_weight: float = 1.0
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "dapo"
    mask_truncated_completions: bool = False  # truncated completions score 0 either way
    learning_rate: float = 5e-5
    lr_scheduler_type: Literal["cosine", "linear", "constant"] = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    bf16: bool = True  # bf16 autocast where the device computes bf16 natively; float32 elsewhere
    correct_reward: float = 1.0
    format_reward: float = 0.0
    length_penalty: float = 0.0  # reward -= length_penalty * completion tokens / max_completion_length
    step_error_penalty: float = 0.0  # reward -= this * share of the chain's checkable steps that are wrong
    dynamic_sampling: Literal["off", "skip", "resample"] = "off"  # what to do with zero-signal groups
    max_resample_rounds: int = 2
    curriculum: bool = False
    curriculum_threshold: float = 0.8
    curriculum_window: int = 64
    drop_solved_after: int = 0  # skip a question after this many samples all right or all wrong; 0: never
    max_steps: int = 200
    max_time_minutes: float | None = None
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 2
    eval_steps: int = 0
    eval_samples: int = 32
    eval_mixture: list[dict] | None = None  # default: the training mixture
    eval_max_tokens: int = 768
    seed: int = 0
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_generations", "per_device_train_batch_size", "gradient_accumulation_steps",
                     "max_completion_length", "num_iterations", "max_steps", "logging_steps", "save_steps",
                     "curriculum_window", "eval_samples", "eval_max_tokens"):
            if getattr(self, name) < 1:
                raise PonderError(f"config field {name!r} must be >= 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise PonderError(f"config field 'num_generations' must be >= 2 (GRPO compares completions "
                              f"of a prompt), got {self.num_generations}")
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if batch % self.num_generations:
            raise PonderError(f"config field 'num_generations' ({self.num_generations}) must divide the step's "
                              f"completions, per_device_train_batch_size * gradient_accumulation_steps = {batch}")
        if self.epsilon_high is None:
            self.epsilon_high = self.epsilon
        if self.steps_per_generation is None:
            self.steps_per_generation = self.gradient_accumulation_steps
        if self.steps_per_generation < 1 or self.steps_per_generation % self.gradient_accumulation_steps:
            raise PonderError(f"config field 'steps_per_generation' must be a positive multiple of "
                              f"gradient_accumulation_steps ({self.gradient_accumulation_steps}), "
                              f"got {self.steps_per_generation}")
        checks = [("temperature", self.temperature > 0), ("top_p", 0 < self.top_p <= 1),
                  ("learning_rate", self.learning_rate > 0), ("beta", self.beta >= 0),
                  ("negative_advantage_weight", self.negative_advantage_weight >= 0),
                  ("epsilon", self.epsilon > 0), ("epsilon_high", self.epsilon_high > 0),
                  ("max_resample_rounds", self.max_resample_rounds >= 0), ("warmup_steps", self.warmup_steps >= 0),
                  ("curriculum_threshold", 0 < self.curriculum_threshold <= 1),
                  ("drop_solved_after", self.drop_solved_after >= 0), ("length_penalty", self.length_penalty >= 0),
                  ("step_error_penalty", self.step_error_penalty >= 0),
                  ("max_time_minutes", self.max_time_minutes is None or self.max_time_minutes > 0),
                  ("vllm_gpu_memory_utilization", 0 < self.vllm_gpu_memory_utilization <= 1)]
        for name, ok in checks:
            if not ok:
                raise PonderError(f"config field {name!r} has a bad value: {getattr(self, name)!r}")
        for name, choices in (("scale_rewards", ("group", "batch", "none")),
                              ("loss_type", ("grpo", "bnpo", "dr_grpo", "dapo")),
                              ("dynamic_sampling", ("off", "skip", "resample")),
                              ("lr_scheduler_type", ("cosine", "linear", "constant"))):
            if getattr(self, name) not in choices:
                raise PonderError(f"config field {name!r} must be one of {', '.join(choices)}, "
                                  f"got {getattr(self, name)!r}")
        for i, item in enumerate(parse_mixture(self.mixture)):
            if getattr(item, "length", None) is not None or getattr(item, "options", None):
                raise PonderError(f"mixture entry {i}: GRPO samples by level and the default family; "
                                  f"'length' and 'options' are not supported here yet")
        if self.eval_mixture is not None:
            parse_mixture(self.eval_mixture)
        check_engine(self.engine)

    @property
    def prompts_per_step(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps // self.num_generations

    @property
    def steps_per_batch(self) -> int:
        """Optimizer steps cut from one generated batch."""
        return self.steps_per_generation // self.gradient_accumulation_steps
