"""Sums and maxima over all workers, on the device the process group can reduce on.

NCCL (the backend on GPUs) reduces CUDA tensors only: a CPU tensor fails with "No backend
type associated with device type cpu". gloo (CPU runs) takes CPU tensors. So each reduction
puts its values on the engine's device and brings the result back as numpy. Seen on the
first GPU run (H200, 2026-11-26): every evaluation and `bench train` failed there, while
the CPU tests, on gloo, passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def reduce_over_workers(torch: Any, values: np.ndarray | Sequence[float], device: Any, op: str = "sum") -> np.ndarray:
    """`values` reduced elementwise over all ranks (float64; `op` is "sum" or "max")."""
    tensor = torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=torch.float64, device=device)
    reduce_op = {"sum": torch.distributed.ReduceOp.SUM, "max": torch.distributed.ReduceOp.MAX}[op]
    torch.distributed.all_reduce(tensor, op=reduce_op)
    return tensor.cpu().numpy()
