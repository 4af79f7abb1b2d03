"""Process-group set-up from torchrun's environment, and the few collectives the loop needs.

One process without torchrun is world size 1 and never touches torch.distributed. Under torchrun
(RANK/WORLD_SIZE/LOCAL_RANK set) we join the group: NCCL when the run uses CUDA, gloo otherwise.

Every collective here is called by every rank at the same point of the loop, so no rank waits on
one that took another branch. A rank that dies makes the others fail in their next collective (gloo:
connection closed; NCCL: the watchdog) and torchrun then stops or restarts the whole group.
BAGOFTRICKS_DIST_TIMEOUT (seconds, default 1800) bounds how long a collective waits for a rank that
hangs without dying.
"""
from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def from_env() -> DistInfo:
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def elastic_restart_count() -> int:
    """How often torchrun has restarted this worker group (0 on the first attempt or without torchrun)."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def init(info: DistInfo, device: torch.device, timeout_s: float | None = None) -> None:
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return
    # torch.distributed.nn.functional takes `group=group.WORLD` as a default argument: imported after
    # the group exists (DDP imports torch._dynamo, which imports it), those defaults hold the group for
    # the life of the interpreter, destroy_process_group() cannot free it, and gloo's threads run on
    # into interpreter shutdown. Workers of finished runs were seen to abort then (SIGABRT, "terminate
    # called without an active exception"), most likely a gloo thread releasing a tensor, which needs
    # the GIL, while the interpreter is finalizing. Imported first, the defaults are None.
    import torch.distributed.nn  # noqa: F401
    if timeout_s is None:
        timeout_s = float(os.environ.get("BAGOFTRICKS_DIST_TIMEOUT", "1800"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    kwargs = {}
    if device.type == "cuda":
        torch.cuda.set_device(device)  # object collectives and NCCL use the current device
        kwargs["device_id"] = device
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and os.environ.get("MASTER_ADDR"):
        # torchrun's agent serves one store for all the restarts of its workers; keys written by a
        # previous attempt (gloo peer addresses, the NCCL unique id) would be read as current ones and
        # the restarted group would fail to connect (pytorch/pytorch#135712). One namespace per attempt.
        store, _, _ = next(dist.rendezvous("env://", timeout=timeout))
        store = dist.PrefixStore(f"bagoftricks/attempt-{elastic_restart_count()}/", store)
        dist.init_process_group(backend, store=store, rank=info.rank, world_size=info.world_size, timeout=timeout,
                                **kwargs)
    else:
        dist.init_process_group(backend, timeout=timeout, **kwargs)


def shutdown() -> None:
    """Leave the process group and free it, so that its threads end before the interpreter does.

    destroy_process_group() drops torch's own references; the DDP wrapper of a finished run sits in
    reference cycles, so the group (and gloo's threads) would live until a later garbage collection or
    interpreter shutdown. Collecting here frees it now: its destructor waits for its work threads.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        gc.collect()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max_flag(flag: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """A 0-d bool tensor OR-ed over ranks, on the device: an asynchronous collective, no host read."""
    if not info.enabled:
        return flag
    t = flag.to(torch.int32).reshape(1)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t[0].bool()


def reduce_max(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Element-wise maximum over ranks of a few numbers (flags, signal numbers), in one collective."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
