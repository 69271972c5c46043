"""The loss options every cross-entropy entry point takes, listed once.

``ml_softmax.cross_entropy``, ``linear_cross_entropy`` and ``ml_softmax.parallel.cross_entropy``
take them as ``**options`` and pass them on to the native ``Context`` method, which reads
them (and raises TypeError for an unknown one); ``with_loss_options`` shows them in the
function's signature, so ``help()`` and ``inspect.signature`` list them with their defaults.
"""

from __future__ import annotations

import inspect

# (name, default, annotation): PyTorch's defaults; the semantics are in cross_entropy's help.
LOSS_OPTIONS = (
    ("weight", None, None),
    ("ignore_index", -100, "int"),
    ("reduction", "mean", "str"),
    ("label_smoothing", 0.0, "float"),
    ("z_loss", 0.0, "float"),
    ("softcap", None, None),
)


def with_loss_options(fn):
    """Gives ``fn(..., **options)`` a signature that lists the loss options, keyword-only,
    after its own parameters, in place of ``**options``."""
    sig = inspect.signature(fn)
    own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    options = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=default,
            annotation=inspect.Parameter.empty if annotation is None else annotation,
        )
        for name, default, annotation in LOSS_OPTIONS
    ]
    fn.__signature__ = sig.replace(parameters=own + options)
    return fn
