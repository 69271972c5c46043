"""ml_softmax against the float64 numpy reference (tests/reference.py), on every adapter.

Each test runs once per adapter (the `ctx` fixture) on fresh random data (the `rng` fixture;
the seed is in pytest's header). Outputs are poisoned with NaN on the GPU before each
dispatch, so an element a kernel fails to write fails the comparison.
"""

import os
import subprocess
import sys
import threading
import time

import ml_dtypes
import numpy as np
import pytest

import ml_softmax as ms
import reference as ref

REDUCTIONS = ["mean", "sum", "none"]

OPTION_SETS = {
    "defaults": {},
    "weight": {"weight": "random"},
    "ignore_index": {"ignore_index": -1},
    "label_smoothing": {"label_smoothing": 0.15},
    "z_loss": {"z_loss": 1e-3},
    "softcap": {"softcap": 4.0},
    "everything": {"weight": "random", "ignore_index": 3, "label_smoothing": 0.1,
                   "z_loss": 2e-3, "softcap": 6.0},
}


def make_options(rng, opts, cols):
    opts = dict(opts)
    if opts.get("weight") == "random":
        opts["weight"] = rng.uniform(0.2, 2.0, cols).astype(np.float32)
    return opts


def make_labels(rng, shape, cols, opts, dtype=np.int64):
    y = rng.integers(0, cols, shape).astype(dtype)
    if "ignore_index" in opts:
        y[rng.random(shape) < 0.25] = opts["ignore_index"]
    else:
        y.reshape(-1)[0] = -100  # the default ignore index, once
    return y


def check(loss, grad, want_loss, want_grad, *, rtol=2e-5, grad_tol=2e-5, dtype=np.float32):
    if isinstance(want_loss, np.ndarray):
        assert isinstance(loss, np.ndarray) and loss.dtype == np.float32
        assert loss.shape == want_loss.shape
        np.testing.assert_allclose(loss, want_loss, rtol=rtol, atol=rtol * np.abs(want_loss).max())
    else:
        assert isinstance(loss, float)
        assert loss == pytest.approx(want_loss, rel=rtol, abs=1e-6)
    assert grad.dtype == dtype and grad.shape == want_grad.shape
    scale = max(np.abs(want_grad).max(), 1e-30)
    np.testing.assert_allclose(grad.astype(np.float64), want_grad, rtol=0, atol=grad_tol * scale)


def test_adapters_list_every_adapter_and_one_default():
    found = ms.adapters()
    print("adapters:", [(a["name"], a["backend"], a["type"]) for a in found])
    assert found, "no adapter"
    assert sum(a["default"] for a in found) == 1
    for a in found:
        assert set(a) == {"name", "backend", "type", "driver", "driver_info", "default"}
        assert a["backend"] in {"vulkan", "metal", "dx12", "gl"}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option_set", list(OPTION_SETS))
def test_class_targets_every_option_and_reduction(ctx, rng, option_set, reduction):
    rows, cols = int(rng.integers(1, 40)), int(rng.integers(2, 300))
    opts = make_options(rng, OPTION_SETS[option_set], cols)
    z = (rng.standard_normal((rows, cols)) * 3).astype(np.float32)
    y = make_labels(rng, rows, cols, opts)
    loss, grad = ctx.cross_entropy(z, y, reduction=reduction, **opts)
    want_loss, want_grad = ref.cross_entropy(z, y, reduction=reduction, **opts)
    check(loss, grad, want_loss, want_grad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option_set", ["defaults", "weight", "label_smoothing", "z_loss",
                                        "softcap"])
def test_probability_targets(ctx, rng, option_set, reduction):
    rows, cols = int(rng.integers(1, 30)), int(rng.integers(2, 200))
    opts = make_options(rng, OPTION_SETS[option_set], cols)
    z = (rng.standard_normal((rows, cols)) * 2).astype(np.float32)
    t = rng.random((rows, cols))
    t = (t / t.sum(axis=1, keepdims=True)).astype(np.float32)
    loss, grad = ctx.cross_entropy(z, t, reduction=reduction, **opts)
    want_loss, want_grad = ref.cross_entropy(z, t, reduction=reduction, **opts)
    check(loss, grad, want_loss, want_grad)
    # float64 probabilities are the same targets, cast to float32.
    loss64, grad64 = ctx.cross_entropy(z, t.astype(np.float64), reduction=reduction, **opts)
    np.testing.assert_array_equal(grad64, grad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_n_dimensional_logits_classes_last(ctx, rng, reduction):
    shape = (2, 3, 4, int(rng.integers(2, 100)))
    z = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, shape[-1], shape[:-1])
    loss, grad = ctx.cross_entropy(z, y, reduction=reduction, label_smoothing=0.05)
    want_loss, want_grad = ref.cross_entropy(z, y, reduction=reduction, label_smoothing=0.05)
    check(loss, grad, want_loss, want_grad)
    if reduction == "none":
        assert loss.shape == shape[:-1]
    t = rng.dirichlet(np.ones(shape[-1]), shape[:-1]).astype(np.float32)
    loss, grad = ctx.cross_entropy(z, t, reduction=reduction)
    check(loss, grad, *ref.cross_entropy(z, t, reduction=reduction))


def test_int32_labels_match_int64(ctx, rng):
    z = rng.standard_normal((17, 33)).astype(np.float32)
    y = rng.integers(0, 33, 17)
    l64, g64 = ctx.cross_entropy(z, y.astype(np.int64))
    l32, g32 = ctx.cross_entropy(z, y.astype(np.int32))
    assert l32 == l64
    np.testing.assert_array_equal(g32, g64)


def test_float64_logits_computed_in_float32(ctx, rng):
    z = rng.standard_normal((9, 50)) * 4
    y = rng.integers(0, 50, 9)
    loss, grad = ctx.cross_entropy(z, y, reduction="sum")
    assert grad.dtype == np.float32
    l32, g32 = ctx.cross_entropy(z.astype(np.float32), y, reduction="sum")
    assert loss == l32
    np.testing.assert_array_equal(grad, g32)
    check(loss, grad, *ref.cross_entropy(z.astype(np.float32), y, reduction="sum"))
    p = ctx.softmax(z)
    assert p.dtype == np.float32


HALVES = {"float16": (np.float16, 1e-3), "bfloat16": (ml_dtypes.bfloat16, 8e-3)}


@pytest.mark.parametrize("half", list(HALVES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_half_precision_logits(ctx, rng, half, reduction):
    dtype, unit = HALVES[half]
    rows, cols = int(rng.integers(1, 30)), int(rng.integers(2, 300))
    z = (rng.standard_normal((rows, cols)) * 3).astype(dtype)
    y = rng.integers(0, cols, rows)
    if half == "float16" and not ctx.float16:
        with pytest.raises(ms.DeviceError, match="SHADER_F16"):
            ctx.cross_entropy(z, y)
        with pytest.raises(ms.DeviceError, match="SHADER_F16"):
            ctx.softmax(z)
        return
    loss, grad = ctx.cross_entropy(z, y, reduction=reduction, z_loss=1e-3)
    # The reference sees the same rounded logits; the gradient is rounded to the half format.
    want_loss, want_grad = ref.cross_entropy(z.astype(np.float64), y, reduction=reduction,
                                             z_loss=1e-3)
    check(loss, grad, want_loss, want_grad, rtol=1e-4, grad_tol=unit, dtype=np.dtype(dtype))
    p = ctx.softmax(z)
    assert p.dtype == np.dtype(dtype) and p.shape == z.shape
    np.testing.assert_allclose(p.astype(np.float64), ref.softmax(z.astype(np.float64)),
                               rtol=unit, atol=unit * 1e-2)


@pytest.mark.parametrize("log", [False, True])
def test_softmax_and_log_softmax(ctx, rng, log):
    # At least 2 columns: the masked row keeps a finite logit (a row of only -inf has no
    # distribution: NaN, as in PyTorch).
    z = (rng.standard_normal((3, 7, int(rng.integers(2, 500)))) * 5).astype(np.float32)
    z[0, 0, 0] = -np.inf  # a mask: probability 0
    got = ctx.log_softmax(z) if log else ctx.softmax(z)
    assert got.shape == z.shape and got.dtype == np.float32
    want = ref.softmax(z, log=log)
    if log:
        assert got[0, 0, 0] == -np.inf
        fin = np.isfinite(want)
        np.testing.assert_allclose(got[fin], want[fin], rtol=1e-5, atol=1e-5)
    else:
        assert got[0, 0, 0] == 0.0
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_module_functions_use_the_default_context(rng):
    z = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    p = ms.softmax(z)
    loss, grad = ms.cross_entropy(z, np.array([1]))
    np.testing.assert_allclose(p[0], [0.09003057, 0.24472847, 0.66524096], rtol=1e-5)
    assert loss == pytest.approx(1.4076059644443801, rel=1e-6)
    np.testing.assert_allclose(grad[0], [0.09003057, -0.75527153, 0.66524096], rtol=1e-5)
    np.testing.assert_allclose(ms.log_softmax(z), np.log(p), rtol=1e-5)
    default = [a for a in ms.adapters() if a["default"]][0]
    info = ms.default_context().adapter
    assert (info["name"], info["backend"]) == (default["name"], default["backend"])


def test_wgpu_backend_and_adapter_name_are_honoured_by_the_default_context():
    for backend in sorted({a["backend"] for a in ms.adapters()}):
        code = ("import ml_softmax as ms, numpy as np; "
                "print(ms.default_context().adapter['backend']); "
                "print(ms.cross_entropy(np.array([[1., 2., 3.]], 'float32'), np.array([1]))[0])")
        env = dict(os.environ, WGPU_BACKEND=backend)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.split()
        assert lines[0] == backend and float(lines[1]) == pytest.approx(1.4076, abs=1e-4)
    env = dict(os.environ, WGPU_BACKEND="no-such-backend")
    out = subprocess.run([sys.executable, "-c", "import ml_softmax as ms; ms.default_context()"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "ValueError: invalid option WGPU_BACKEND" in out.stderr
    env = dict(os.environ, WGPU_ADAPTER_NAME="no adapter is called this")
    out = subprocess.run([sys.executable, "-c", "import ml_softmax as ms; ms.default_context()"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert 'ml_softmax.DeviceError: no GPU adapter found' in out.stderr
    assert 'name containing "no adapter is called this"' in out.stderr


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_zero_denominator_mean_gives_zero_loss_and_gradient(ctx, rng, reduction):
    # Every row ignored: D = 0. The library's rule: "mean" gives 0 and a zero gradient (PyTorch
    # gives NaN); "sum" is 0 with a zero gradient anyway.
    z = rng.standard_normal((6, 11)).astype(np.float32)
    y = np.full(6, -100)
    loss, grad = ctx.cross_entropy(z, y, reduction=reduction)
    assert loss == 0.0 and not np.isnan(loss)
    np.testing.assert_array_equal(grad, np.zeros_like(z))
    # D = 0 through weights: every target class has weight 0 (others do not).
    y = rng.integers(0, 5, 6)
    w = np.ones(11, np.float32)
    w[:5] = 0.0
    loss, grad = ctx.cross_entropy(z, y, weight=w, reduction="mean")
    assert loss == 0.0
    np.testing.assert_array_equal(grad, np.zeros_like(z))
    assert ref.cross_entropy(z, y, weight=w)[0] == 0.0


def test_bad_input_raises_value_error_with_the_librarys_message(ctx, rng):
    z = rng.standard_normal((4, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 3])

    def raises(msg, *args, **kw):
        with pytest.raises(ValueError) as e:
            ctx.cross_entropy(*args, **kw)
        assert str(e.value) == msg

    # The library's own messages (ml_softmax::Error's Display):
    raises("label 7 in row 2 is outside 0..5 and is not the ignore index -100",
           z, np.array([0, 1, 7, 3]))
    raises("label -3 in row 1 is outside 0..5 and is not the ignore index 9",
           z, np.array([0, -3, 1, 3]), ignore_index=9)
    raises("class weight 1 is NaN: weights must be finite and >= 0",
           z, y, weight=np.array([1, np.nan, 1, 1, 1]))
    raises("class weight 4 is -1: weights must be finite and >= 0",
           z, y, weight=[1, 1, 1, 1, -1])
    raises("weight has 4 elements, but the shape needs 5", z, y, weight=np.ones(4))
    raises("invalid option label_smoothing = 1.5: must be in [0, 1]", z, y, label_smoothing=1.5)
    raises("invalid option z_loss = -1: must be finite and >= 0", z, y, z_loss=-1.0)
    raises("invalid option softcap = -2: must be finite and >= 0 (0 turns it off)",
           z, y, softcap=-2.0)
    raises("empty input: the shape is 0 x 5, but rows and cols must both be at least 1",
           np.zeros((0, 5), np.float32), np.zeros(0, np.int64))
    # The binding's own checks (numpy side):
    raises("logits must have at least 2 dimensions, [rows, classes] or [..., classes] with the "
           "classes last, but its shape is (5,)", z[0], y[:1])
    raises("logits must be C-contiguous (row-major), but this array of shape (4, 3) is a "
           "strided view; pass numpy.ascontiguousarray(logits)", z[:, ::2], y)
    raises("logits have dtype int32 (int32); expected float32, float16, bfloat16 (ml_dtypes) "
           "or float64 (computed in float32)", z.astype(np.int32), y)
    raises("logits must be a numpy array, got list (use numpy.asarray)", z.tolist(), y)
    raises("target holds class indices (an integer dtype), so its shape must be (4,), but it "
           "is (3,) (logits (4, 5))", z, y[:3])
    raises("target holds probabilities (a float dtype), so its shape must be (4, 5), but it is "
           "(4, 4) (logits (4, 5))", z, np.ones((4, 4), np.float32) / 4)
    assert "target has dtype uint8" in pytest.raises(
        ValueError, ctx.cross_entropy, z, y.astype(np.uint8)).value.args[0]
    raises("weight must be 1-D (one weight per class), but its shape is (1, 5)",
           z, y, weight=np.ones((1, 5)))
    raises('invalid option reduction = "avg": must be "mean", "sum" or "none"',
           z, y, reduction="avg")
    with pytest.raises(ValueError, match="C-contiguous"):
        ctx.softmax(np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32)))


def test_context_errors():
    with pytest.raises(ValueError, match="invalid option backend"):
        ms.Context(backend="cuda")
    with pytest.raises(ms.DeviceError, match="no GPU adapter found") as e:
        ms.Context(adapter="no adapter is called this")
    assert isinstance(e.value, RuntimeError)


def test_one_context_from_many_threads(ctx, rng):
    jobs = []
    for i in range(8):
        rows, cols = int(rng.integers(1, 64)), int(rng.integers(2, 2000))
        z = (rng.standard_normal((rows, cols)) * 3).astype(np.float32)
        y = rng.integers(0, cols, rows)
        jobs.append((z, y, ["mean", "sum", "none"][i % 3]))
    results = [None] * len(jobs)
    errors = []

    def work(i):
        try:
            z, y, red = jobs[i]
            for _ in range(3):
                results[i] = ctx.cross_entropy(z, y, reduction=red, label_smoothing=0.1)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (z, y, red), (loss, grad) in zip(jobs, results):
        check(loss, grad, *ref.cross_entropy(z, y, reduction=red, label_smoothing=0.1))


def test_the_gil_is_released_during_gpu_work():
    # A long call in one thread; the main thread must run Python meanwhile. With the GIL held
    # for the whole call, no main-thread tick could fall inside the call's middle.
    ctx = ms.default_context()
    rng = np.random.default_rng()
    z = rng.standard_normal((2048, 8192)).astype(np.float32)
    y = rng.integers(0, 8192, 2048)
    span = {}

    def work():
        span["start"] = time.perf_counter()
        ctx.cross_entropy(z, y)
        span["end"] = time.perf_counter()

    ticks = []
    t = threading.Thread(target=work)
    t.start()
    while t.is_alive():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    t.join()
    length = span["end"] - span["start"]
    inside = [x for x in ticks if span["start"] + 0.2 * length < x < span["end"] - 0.2 * length]
    print(f"call took {length * 1e3:.0f} ms; {len(inside)} main-thread ticks in its middle 60%")
    assert length > 0.02, "the call was too short to tell"
    assert len(inside) >= 3
