"""Type stubs of ml_softmax (the functions' docstrings hold the semantics)."""

from typing import Literal, Optional, Sequence, Tuple, TypedDict, Union

import numpy as np
import numpy.typing as npt

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
        *,
        weight: Weight = None,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        softcap: Optional[float] = None,
    ) -> Tuple[Loss, npt.NDArray]: ...
    def linear_cross_entropy(
        self,
        hidden: npt.NDArray,
        classifier: npt.NDArray,
        target: npt.NDArray,
        *,
        bias: Weight = None,
        weight: Weight = None,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        softcap: Optional[float] = None,
    ) -> Tuple[Union[float, npt.NDArray[np.float32]], ...]: ...
    def softmax(self, logits: npt.NDArray) -> npt.NDArray: ...
    def log_softmax(self, logits: npt.NDArray) -> npt.NDArray: ...

def default_context() -> Context: ...
def adapters() -> list[AdapterEntry]: ...
def cross_entropy(
    logits: npt.NDArray,
    target: npt.NDArray,
    *,
    weight: Weight = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
) -> Tuple[Loss, npt.NDArray]: ...
def linear_cross_entropy(
    hidden: npt.NDArray,
    classifier: npt.NDArray,
    target: npt.NDArray,
    *,
    bias: Weight = None,
    weight: Weight = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: Optional[float] = None,
) -> Tuple[Union[float, npt.NDArray[np.float32]], ...]: ...
def softmax(logits: npt.NDArray) -> npt.NDArray: ...
def log_softmax(logits: npt.NDArray) -> npt.NDArray: ...
