"""Process groups for `torchrun`: one process per device, gradients all-reduced by DDP.

`init()` reads the variables torchrun sets (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT).
With WORLD_SIZE unset or 1 it is a no-op and every helper gives the single-process answer
without a collective, so trainers call them unconditionally and run unchanged either way.
The backend is nccl when CUDA is available (one GPU per local rank), gloo otherwise.

Rules the trainers keep so ranks never deadlock: every rank calls the same collectives in the
same order (a step's all-reduce, `gather`), and only rank 0 writes files.
"""

from __future__ import annotations

import gc
import os
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ponder import PonderError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None  # None: wherever the model already is (single process)
    owned: bool = False  # this module opened the process group, so it closes it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank (picklable objects)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def sum(self, counts: dict[str, float]) -> Counter:
        """Key-wise sum over ranks (keys may differ between ranks)."""
        total: Counter = Counter()
        for part in self.gather(dict(counts)):
            total.update(part)
        return total

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        """Destroy the group once no DDP wrapper holds it (callers drop theirs first; `gc` frees cycles):
        a group whose last holder is freed later, as a function returns, could hang its rank on exit."""
        if self.owned and dist.is_initialized():
            gc.collect()
            dist.destroy_process_group()


def init() -> Dist:
    """Join the process group torchrun describes, or a single-process Dist when there is none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    try:
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise PonderError("WORLD_SIZE > 1 needs RANK set too; launch with torchrun --nproc_per_node=N") from None
    cuda = torch.cuda.is_available()
    if cuda and local >= torch.cuda.device_count():
        raise PonderError(f"LOCAL_RANK {local} has no GPU of its own ({torch.cuda.device_count()} visible); "
                          f"launch at most that many processes per node")
    if cuda:
        torch.cuda.set_device(local)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=30))
    return Dist(rank, world, local, torch.device("cuda", local) if cuda else torch.device("cpu"), owned)


def wrap(model, d: Dist):
    """DDP around `model` when there are several ranks (it broadcasts rank 0's weights now).

    Buffers are not re-broadcast at every forward: a causal LM's buffers (rotary
    frequencies) never change, and the broadcast would be a collective inside every
    forward, which ranks running different numbers of forwards could not match."""
    if not d.enabled:
        return model
    ids = [d.local_rank] if d.device is not None and d.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def no_sync(model, sync: bool):
    """DDP's no_sync() for micro-batches whose gradients only accumulate; a null context otherwise."""
    import contextlib

    return model.no_sync() if not sync and isinstance(model, DistributedDataParallel) else contextlib.nullcontext()


def zero_backward(model, inputs: dict) -> None:
    """A backward pass that adds nothing: a rank with fewer micro-batches than the others runs these
    so every rank joins the same number of gradient all-reduces. `model(**inputs)` returns logits."""
    (model(**inputs).float().sum() * 0.0).backward()


def main_bar(d: Dist, total: int, initial: int, desc: str, unit: str = "step"):
    """The run's progress bar on rank 0; a silent one elsewhere."""
    from tqdm import tqdm

    from ponder.train.metrics import progress

    if not d.is_main:
        return tqdm(disable=True)
    bar = progress(total, initial, desc)
    bar.unit = unit
    return bar


class NullLog:
    """The metrics log of a rank that writes nothing (every rank but 0)."""

    def log(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
