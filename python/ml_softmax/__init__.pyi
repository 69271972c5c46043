"""Type stubs of ml_softmax (the functions' docstrings hold the semantics)."""

from typing import Callable, Literal, Optional, Sequence, Tuple, TypedDict, Union

import numpy as np
import numpy.typing as npt
from typing_extensions import Unpack

from . import parallel as parallel

__version__: str

class AdapterInfo(TypedDict):
    name: str
    backend: Literal["vulkan", "metal", "dx12", "gl"]
    type: str
    driver: str
    driver_info: str

class AdapterEntry(AdapterInfo):
    default: bool

Reduction = Literal["mean", "sum", "none"]
# Loss: a float for "mean"/"sum", a float32 array of the logits' leading shape for "none".
Loss = Union[float, npt.NDArray[np.float32]]
Weight = Optional[Union[npt.ArrayLike, Sequence[float]]]

class LossOptions(TypedDict, total=False):
    """The keyword-only loss options of every cross-entropy entry point (ml_softmax/_options.py
    lists them at run time). Defaults: weight None, ignore_index -100, reduction "mean",
    label_smoothing 0.0, z_loss 0.0, softcap None."""

    weight: Weight
    ignore_index: int
    reduction: Reduction
    label_smoothing: float
    z_loss: float
    softcap: Optional[float]

class DeviceError(RuntimeError):
    """No adapter, a missing adapter feature, out of memory, a lost device (the library's message)."""

class Context:
    """One GPU adapter and its compiled kernels; shareable across threads."""

    def __init__(
        self,
        backend: Literal["auto", "vulkan", "metal", "dx12", "gl"] = "auto",
        adapter: Optional[str] = None,
        *,
        poison_outputs: bool = False,
    ) -> None: ...
    @property
    def adapter(self) -> AdapterInfo: ...
    @property
    def float16(self) -> bool: ...
    def cross_entropy(
        self,
        logits: npt.NDArray,
        target: npt.NDArray,
        **options: Unpack[LossOptions],
    ) -> Tuple[Loss, npt.NDArray]: ...
    def linear_cross_entropy(
        self,
        hidden: npt.NDArray,
        classifier: npt.NDArray,
        target: npt.NDArray,
        *,
        bias: Weight = None,
        **options: Unpack[LossOptions],
    ) -> Tuple[Union[float, npt.NDArray[np.float32]], ...]: ...
    def softmax(self, logits: npt.NDArray) -> npt.NDArray: ...
    def log_softmax(self, logits: npt.NDArray) -> npt.NDArray: ...
    # The native half of ml_softmax.parallel.cross_entropy (use that).
    def _vocab_cross_entropy(
        self,
        logits: npt.NDArray,
        target: npt.NDArray,
        vocab_start: int,
        vocab_size: int,
        all_reduce: Callable[[npt.NDArray[np.float32], Literal["max", "sum"]], npt.ArrayLike],
        **options: Unpack[LossOptions],
    ) -> Tuple[Loss, npt.NDArray[np.float32]]: ...

def default_context() -> Context: ...
def adapters() -> list[AdapterEntry]: ...
def cross_entropy(
    logits: npt.NDArray,
    target: npt.NDArray,
    **options: Unpack[LossOptions],
) -> Tuple[Loss, npt.NDArray]: ...
def linear_cross_entropy(
    hidden: npt.NDArray,
    classifier: npt.NDArray,
    target: npt.NDArray,
    *,
    bias: Weight = None,
    **options: Unpack[LossOptions],
) -> Tuple[Union[float, npt.NDArray[np.float32]], ...]: ...
def softmax(logits: npt.NDArray) -> npt.NDArray: ...
def log_softmax(logits: npt.NDArray) -> npt.NDArray: ...
