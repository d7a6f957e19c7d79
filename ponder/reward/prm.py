"""A reward model: a causal LM body with a scalar head read at every step boundary.

The chain is laid out exactly as the policy writes it, `PROMPT STEP\\nSTEP\\n…`,
and the head reads the hidden state on the token that ends each step (the
`\\n`, or the think-close marker after the last step of a finished chain) and
on the last token of the answer. The same class is a process reward model
(trained on every position) or an outcome reward model (trained on the last
one only); `kind` just records which. On disk it is a standard Hugging Face
token-classification directory with one label, plus `reward.json`.

Both kinds default to reading their scores as `last`, the score after the
answer: on cvp a PRM read that way ranked chains best and its best-of-N was
level with or ahead of `min` at every N (BENCHMARKS.md), as Snell et al. found.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForTokenClassification, DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.utils import logging as hf_logging

from ponder import PonderError
from ponder.model.chat import ChatFormat
from ponder.model.loading import load_tokenizer, resolve
from ponder.reward.base import QuestionLike, VerifierStats, check_aggregation
from ponder.reward.shared_prefix import KeptPrefixes, Segment, cut_points, prefix_cuts, run_rests

META = "reward.json"
KINDS = ("prm", "orm")


@dataclass
class Encoded:
    ids: list[int]
    positions: list[int]  # token index of each step boundary, then of the answer's end


@contextmanager
def _quiet():
    """Loading a body into a new head makes transformers report the head as missing; that is the point."""
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


class RewardModel:
    """Scores chains of thought, batched; see the module docstring for the layout."""

    pass_sequences = 256  # chains per pass of a shared-prefix call: bounds what one pass holds in memory

    def __init__(self, model, tokenizer, chat: ChatFormat, kind: str = "prm", aggregation: str = "last",
                 max_batch: int = 32, keep_mb: float = 256) -> None:
        if kind not in KINDS:
            raise PonderError(f"reward model kind must be prm or orm, got {kind!r}")
        if max_batch < 1:
            raise PonderError(f"max_batch must be >= 1, got {max_batch}")
        self.model, self.tokenizer, self.chat = model, tokenizer, chat
        self.kind, self.aggregation, self.max_batch = kind, check_aggregation(aggregation), max_batch
        self.head = getattr(model, "score", None) or getattr(model, "classifier", None)
        if self.head is None:
            raise PonderError(f"{type(model).__name__} has no scalar head (score or classifier layer)")
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        # Run a prefix that chains share once, and keep what ran for later calls to extend (shared_prefix.py);
        # only a body with a plain key/value cache can be extended.
        plain = all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)
        self.share_prefixes = plain
        self.kept = KeptPrefixes(model, keep_mb * 2**20) if plain and keep_mb > 0 else None
        self._pad = tokenizer.pad_token_id or 0
        self.stats = VerifierStats()
        self._prompt_ids: dict[str, list[int]] = {}

    # -- building, saving, loading --------------------------------------------

    @classmethod
    def from_policy(cls, path: str | Path, kind: str = "prm", aggregation: str | None = None,
                    seed: int = 0, keep_mb: float = 256) -> "RewardModel":
        """A reward model whose body is the policy's (its LM head dropped) and whose scalar head is new."""
        folder = resolve(path)
        torch.manual_seed(seed)
        try:
            with _quiet():
                model = AutoModelForTokenClassification.from_pretrained(folder, num_labels=1, dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise PonderError(f"cannot build a reward model on {folder}: {str(e).splitlines()[0]}") from e
        head = getattr(model, "score", None) or model.classifier
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.02)
            if head.bias is not None:
                head.bias.zero_()
        tok = load_tokenizer(folder)
        return cls(model.eval(), tok, ChatFormat.for_tokenizer(tok), kind, aggregation or "last", keep_mb=keep_mb)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", keep_mb: float = 256) -> "RewardModel":
        folder = Path(path).expanduser()
        if not (folder / META).exists():
            raise PonderError(f"not a reward model directory (no {META}): {folder}")
        meta = json.loads((folder / META).read_text())
        try:
            model = AutoModelForTokenClassification.from_pretrained(folder, dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise PonderError(f"cannot load a reward model from {folder}: {str(e).splitlines()[0]}") from e
        tok = load_tokenizer(folder)
        chat = ChatFormat.for_tokenizer(tok, meta.get("think_open", "<think>"), meta.get("think_close", "</think>"))
        return cls(model.to(device).eval(), tok, chat, meta.get("kind", "prm"), meta.get("aggregation", "min"),
                   keep_mb=keep_mb)

    def metadata(self) -> dict:
        return {"kind": self.kind, "aggregation": self.aggregation, "step_sep": self.chat.step_sep,
                "think_open": self.chat.think_open, "think_close": self.chat.think_close}

    def save(self, path: str | Path) -> Path:
        from ponder.train.checkpoint import (
            save_model_atomic,  # only saving needs the trainer's atomic writer
        )

        save_model_atomic(Path(path), self.model, self.tokenizer, {META: json.dumps(self.metadata(), indent=1)})
        return Path(path)

    # -- encoding --------------------------------------------------------------

    def _encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _prompt(self, question: QuestionLike) -> list[int]:
        text = self.chat.prompt(question) if isinstance(question, str) else self.chat.render(question)
        if text not in self._prompt_ids:
            if len(self._prompt_ids) > 4096:
                self._prompt_ids.clear()
            self._prompt_ids[text] = self._encode_text(text)
        return self._prompt_ids[text]

    def encode(self, question: QuestionLike, steps: Sequence[str], answer: str | None = None) -> Encoded:
        """Token ids of the chain as the policy writes it, and where the head reads.

        Each piece (a step and its separator, the answer and its end marker) is
        tokenized on its own, as a policy generating step by step would have
        produced it, so a boundary is always the last token of its piece.
        """
        ids = list(self._prompt(question))
        positions = []
        for i, step in enumerate(steps):
            last = answer is not None and i == len(steps) - 1
            ids += self._encode_text(step + (self.chat.think_close if last else self.chat.step_sep))
            positions.append(len(ids) - 1)
        if answer is not None:
            head = self.chat.think_close if not steps else ""
            ids += self._encode_text(head + answer + self.chat.end)
            positions.append(len(ids) - 1)
        if self.max_positions and len(ids) > self.max_positions:
            raise PonderError(f"the chain is {len(ids)} tokens, more than the reward model's "
                              f"{self.max_positions}-token context")
        return Encoded(ids, positions)

    # -- scoring ---------------------------------------------------------------

    def hidden_at(self, encoded: Sequence[Encoded]) -> torch.Tensor:
        """The body's last hidden states at every encoding's positions, in order, from one forward."""
        dev = next(self.model.parameters()).device
        width = max(len(e.ids) for e in encoded)
        ids = torch.full((len(encoded), width), self._pad, dtype=torch.long)
        for r, e in enumerate(encoded):
            ids[r, : len(e.ids)] = torch.tensor(e.ids)
        # Right padding: a causal model never lets a position see the pads after it, so no mask is needed.
        hidden = self.model.base_model(input_ids=ids.to(dev)).last_hidden_state
        rows = torch.tensor([r for r, e in enumerate(encoded) for _ in e.positions], dtype=torch.long, device=dev)
        cols = torch.tensor([p for e in encoded for p in e.positions], dtype=torch.long, device=dev)
        return hidden[rows, cols]

    def logits(self, encoded: Sequence[Encoded]) -> list[torch.Tensor]:
        """Head logits at each encoding's positions (with grad when training)."""
        out = self.head(self.hidden_at(encoded)).squeeze(-1).float()
        return list(out.split([len(e.positions) for e in encoded]))

    def score_batch(self, questions: Sequence[QuestionLike], chains: Sequence[Sequence[str]],
                    answers: Sequence[str | None]) -> list[list[float]]:
        """Per chain: sigmoid scores per step, then for the answer where there is one."""
        if not len(questions) == len(chains) == len(answers):
            raise PonderError("score_batch needs as many questions, chains and answers")
        encoded = [self.encode(q, s, a) for q, s, a in zip(questions, chains, answers)]
        live = [i for i, e in enumerate(encoded) if e.positions]
        out: list[list[float]] = [[] for _ in encoded]
        if not live:
            return out
        enc = [encoded[i] for i in live]
        with torch.inference_mode():
            if self.share_prefixes:
                # a pass holds every segment it runs until it returns (keys and values of all layers), so a call
                # of thousands of chains runs in passes of `pass_sequences`; what is kept joins them up
                lens = [len(self._prompt(questions[i])) for i in live]
                step = self.pass_sequences
                hidden = [h for start in range(0, len(enc), step)
                          for h in self._hidden_extending(enc[start:start + step], lens[start:start + step])]
            else:
                hidden = []
                order = sorted(range(len(enc)), key=lambda i: len(enc[i].ids))  # little padding per batch
                for start in range(0, len(order), self.max_batch):
                    part = [enc[i] for i in order[start : start + self.max_batch]]
                    hidden += self.hidden_at(part).split([len(e.positions) for e in part])
                    self.stats.calls += 1
                    self.stats.tokens += sum(len(e.ids) for e in part)
                hidden = [h for _, h in sorted(zip(order, hidden), key=lambda t: t[0])]
            for i, h in zip(live, hidden):
                out[i] = torch.sigmoid(self.head(h).squeeze(-1).float()).tolist()
        self.stats.sequences += len(live)
        return out

    def _hidden_extending(self, enc: list[Encoded], prompt_lens: list[int]) -> list[torch.Tensor]:
        """Hidden states at each chain's positions: shared prefixes run first, then each chain's rest, each
        on the longest sequence kept from this call or an earlier one."""
        if self.kept is not None:
            self.kept.check_weights()
        made: dict[tuple[int, ...], Segment] = {}
        cuts = prefix_cuts(enc, prompt_lens)
        shared = {tuple(e.ids[:c]): cut_points(e, n) for e, n, c in zip(enc, prompt_lens, cuts) if c < len(e.ids)}
        self._extend(list(shared.items()), made)
        self._extend([(tuple(e.ids), cut_points(e, n)) for e, n in zip(enc, prompt_lens)], made)
        return [made[tuple(e.ids)].all_hidden()[e.positions] for e in enc]

    def _extend(self, seqs: list[tuple[tuple[int, ...], list[int]]], made: dict[tuple[int, ...], Segment]) -> None:
        """Put a segment for every sequence in `made`, running only what nothing kept covers. Each sequence
        comes with the prefix lengths worth looking up."""
        todo: dict[tuple[int, ...], Segment | None] = {}
        for ids, lengths in seqs:
            if ids in made or ids in todo:
                continue
            base = self._longest(ids, lengths, made)
            if base is not None and base.length == len(ids):
                made[ids] = base
            else:
                todo[ids] = base
        order = sorted(todo, key=lambda ids: (todo[ids].length if todo[ids] else 0, len(ids)))
        for start in range(0, len(order), self.max_batch):
            part = order[start : start + self.max_batch]
            rests = [list(ids[todo[ids].length if todo[ids] else 0 :]) for ids in part]
            for ids, seg in zip(part, run_rests(self.model.base_model, [todo[i] for i in part], rests, self._pad)):
                made[ids] = seg
                if self.kept is not None:
                    self.kept.put_segment(ids, seg)
            self.stats.calls += 1
            self.stats.tokens += sum(len(r) for r in rests)

    def _longest(self, ids: tuple[int, ...], lengths: list[int], made: dict) -> Segment | None:
        for n in sorted((n for n in lengths if n <= len(ids)), reverse=True):
            hit = made.get(ids[:n]) or (self.kept.longest(ids, [n]) if self.kept is not None else None)
            if hit is not None:
                return hit
        return None

    def score(self, question: QuestionLike, steps: Sequence[str], answer: str | None = None) -> list[float]:
        return self.score_batch([question], [steps], [answer])[0]
