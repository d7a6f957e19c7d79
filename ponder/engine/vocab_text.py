"""What the local sampler needs to know about its vocabulary as text: each token's piece, which
tokens could complete a stop string, and streamed tokens turned into text deltas.

Built once per engine and cached, so the decode loop never detokenizes token by token.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ponder.engine.base import StepListener


class VocabText:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._pieces: list[str] | None = None
        self._stop_tables: dict[tuple[str, ...], torch.Tensor] = {}

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def listener(self, chunk: list[tuple[int, int]], on_step: StepListener):
        """Adapts a call-level listener to one chunk: chunk rows and tokens in (turned into text
        deltas, holding back bytes of a character not complete yet), chunk rows to end out."""
        pieces = self.pieces()
        pending: dict[int, list[int]] = {}

        def delta(r: int, t: int) -> str:
            piece = pieces[t] if t < len(pieces) else "\ufffd"
            if "\ufffd" not in piece and r not in pending:
                return piece
            ids = pending.setdefault(r, [])
            ids.append(t)
            text = self.decode(ids)
            if text.endswith("\ufffd") and len(ids) < 4:
                return ""
            del pending[r]
            return text

        def emit(chunk_rows: list[int], tokens: list[int]) -> set[int]:
            ended = on_step([chunk[r] for r in chunk_rows], [delta(r, t) for r, t in zip(chunk_rows, tokens)])
            if not ended:
                return set()
            ended = set(ended)
            return {r for r in chunk_rows if chunk[r][0] in ended}

        return emit

    def stop_table(self, stops: tuple[str, ...], vocab: int, dev) -> torch.Tensor:
        """Which tokens could complete a stop string: their text holds a stop's last character."""
        table = self._stop_tables.get(stops)
        if table is not None and table.shape[0] == vocab and table.device == dev:
            return table
        pieces = self.pieces()
        lasts = {s[-1] for s in stops}
        flags = [True] * vocab
        for i in range(min(vocab, len(pieces))):
            p = pieces[i]
            flags[i] = (not p) or ("\ufffd" in p) or any(ch in p for ch in lasts)
        table = torch.tensor(flags, dtype=torch.bool, device=dev)
        self._stop_tables[stops] = table
        return table

    def pieces(self) -> list[str]:
        """The text each token adds when it follows an ordinary token (keeps leading spaces)."""
        if self._pieces is None:
            n = len(self.tokenizer)
            anchor = self.tokenizer.encode("a", add_special_tokens=False)
            if len(anchor) == 1:
                base = self.decode(anchor)
                texts = self.tokenizer.batch_decode([[anchor[0], i] for i in range(n)], skip_special_tokens=False,
                                                    clean_up_tokenization_spaces=False)
                self._pieces = [t[len(base):] if t.startswith(base) else t for t in texts]
            else:
                self._pieces = self.tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False,
                                                           clean_up_tokenization_spaces=False)
        return self._pieces
