"""Shared fixtures: one Context per adapter the machine has, and fresh random data each run.

The seed is new each run (printed, and shown by pytest in the header); set
ML_SOFTMAX_TEST_SEED to replay a run.
"""

import os
import random

import numpy as np
import pytest

import ml_softmax as ms

SEED = int(os.environ.get("ML_SOFTMAX_TEST_SEED", random.SystemRandom().randrange(2**32)))


def pytest_report_header(config):
    names = ", ".join(f"{a['name']} ({a['backend']})" for a in ms.adapters())
    return [
        f"ml_softmax test seed: {SEED} (replay with ML_SOFTMAX_TEST_SEED={SEED})",
        f"ml_softmax adapters: {names or 'NONE'}",
    ]


def _adapter_id(a):
    return f"{a['backend']}-{a['name']}"


ADAPTERS = ms.adapters()
if not ADAPTERS:
    # No adapter is a failure, never a skip: the GPU tests must not pass vacuously.
    raise pytest.UsageError(
        "ml_softmax found no GPU adapter; install Mesa's software drivers "
        "(apt-get install -y mesa-vulkan-drivers libvulkan1)"
    )

_contexts = {}


@pytest.fixture(params=ADAPTERS, ids=_adapter_id, scope="session")
def ctx(request):
    """A poisoning Context on each adapter in turn (outputs start as NaN on the GPU)."""
    a = request.param
    key = (a["backend"], a["name"])
    if key not in _contexts:
        c = ms.Context(backend=a["backend"], adapter=a["name"], poison_outputs=True)
        assert (c.adapter["backend"], c.adapter["name"]) == key
        print(f"\nadapter: {c!r}")
        _contexts[key] = c
    return _contexts[key]


@pytest.fixture
def rng(request):
    """A generator seeded from the run's seed and the test's name (fresh each run)."""
    digest = sum(ord(ch) * (i + 1) for i, ch in enumerate(request.node.nodeid))
    print(f"seed {SEED}, test offset {digest}")
    return np.random.default_rng([SEED, digest])
