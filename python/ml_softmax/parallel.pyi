"""Type stubs of ml_softmax.parallel (the docstrings in parallel.py hold the semantics)."""

from typing import Any, Callable, Literal, Optional, Tuple

import numpy as np
import numpy.typing as npt
from typing_extensions import Unpack

from . import Context, Loss, LossOptions

AllReduce = Callable[[npt.NDArray[np.float32], Literal["max", "sum"]], npt.ArrayLike]

def cross_entropy(
    logits_shard: npt.NDArray,
    target: npt.NDArray,
    vocab_start: int,
    vocab_size: int,
    all_reduce: AllReduce,
    *,
    context: Optional[Context] = None,
    **options: Unpack[LossOptions],
) -> Tuple[Loss, npt.NDArray[np.float32]]: ...
def mpi_all_reduce(comm: Any) -> AllReduce: ...
def torch_all_reduce(group: Any = None) -> AllReduce: ...
