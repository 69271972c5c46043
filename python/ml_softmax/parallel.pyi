"""Type stubs of ml_softmax.parallel (the docstrings in parallel.py hold the semantics)."""

from typing import Any, Callable, Literal, Optional, Tuple

import numpy as np
import numpy.typing as npt

from . import Context, Loss, Reduction, Weight

AllReduce = Callable[[npt.NDArray[np.float32], Literal["max", "sum"]], npt.ArrayLike]

def cross_entropy(
    logits_shard: npt.NDArray,
    target: npt.NDArray,
    vocab_start: int,
    vocab_size: int,
    all_reduce: AllReduce,
    *,
    weight: Weight = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
    context: Optional[Context] = None,
) -> Tuple[Loss, npt.NDArray[np.float32]]: ...
def mpi_all_reduce(comm: Any) -> AllReduce: ...
def torch_all_reduce(group: Any = None) -> AllReduce: ...
