//! `ml_softmax._native`: the Python extension of ml-softmax (PyO3 + numpy).
//!
//! It binds only the library's public host API (`Context::cross_entropy_targets`,
//! `cross_entropy_half`, `softmax_with`, `softmax_half`, `list_adapters`). What it adds is the
//! numpy side: dtypes (float32 as is; float64 cast to float32 by numpy; float16 and
//! ml_dtypes' bfloat16 passed as their 16-bit patterns), shapes (N-D logits with the
//! classes last are `[prod(leading), classes]` rows), and errors (library input errors become
//! `ValueError`, device errors `ml_softmax.DeviceError`, with the library's message).
//!
//! The GIL is released while the GPU works (`Python::detach`). The input arrays are borrowed,
//! not copied, for that time: a Python thread that writes into them meanwhile races with the
//! upload (as with any numpy function that releases the GIL).

use ml_softmax::parallel::{ReduceOp, VocabShard};
use ml_softmax::{
    BackendChoice, Context, ContextOptions, CrossEntropyOptions, Error, HalfCrossEntropy,
    Precision, Reduction, SoftmaxKind, Strategy, Targets,
};
use numpy::{
    PyArray1, PyArrayDescr, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

mod linear;

pyo3::create_exception!(
    ml_softmax,
    DeviceError,
    PyRuntimeError,
    "A GPU-side failure reported by ml-softmax: no adapter, an adapter that lacks a feature \
     the call needs (e.g. float16 without SHADER_F16), out of memory, a wgpu validation \
     error, a lost device or a timed-out wait. The message is the library's."
);

/// Library errors to Python: bad input is a `ValueError`, everything about the device a
/// `DeviceError`; the text is the library's `Display`.
fn to_py(e: Error) -> PyErr {
    match e {
        Error::EmptyShape { .. }
        | Error::ShapeOverflow { .. }
        | Error::LengthMismatch { .. }
        | Error::LabelOutOfRange { .. }
        | Error::InvalidOption { .. }
        | Error::InvalidWeight { .. }
        | Error::BadBuffer { .. } => PyValueError::new_err(e.to_string()),
        _ => DeviceError::new_err(e.to_string()),
    }
}

fn value_error(msg: String) -> PyErr {
    PyValueError::new_err(msg)
}

fn shape_text(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The array's dtype as numpy names it (`float32`, `bfloat16`, ...).
fn dtype_name(descr: &Bound<'_, PyArrayDescr>) -> PyResult<String> {
    descr.getattr("name")?.extract()
}

/// `what` as a numpy array, C-contiguous, or a `ValueError` naming it.
fn as_array<'py>(what: &str, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyUntypedArray>> {
    let array = obj.cast::<PyUntypedArray>().map_err(|_| {
        let type_name = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        value_error(format!(
            "{what} must be a numpy array, got {type_name} (use numpy.asarray)"
        ))
    })?;
    if !array.is_c_contiguous() {
        return Err(value_error(format!(
            "{what} must be C-contiguous (row-major), but this array of shape {} is a strided \
             view; pass numpy.ascontiguousarray({what})",
            shape_text(array.shape())
        )));
    }
    Ok(array.clone())
}

/// `array.astype(numpy.<dtype>)`: numpy's own (correctly rounded) conversion.
fn astype<'py>(array: &Bound<'py, PyUntypedArray>, dtype: &str) -> PyResult<Bound<'py, PyAny>> {
    array.call_method1("astype", (dtype,))
}

/// The 16-bit patterns of a float16 or bfloat16 array, without a copy.
fn half_bits<'py>(array: &Bound<'py, PyUntypedArray>) -> PyResult<Bound<'py, PyArrayDyn<u16>>> {
    Ok(array.call_method1("view", ("uint16",))?.cast_into()?)
}

/// Logits as the library takes them, with what is needed to shape the results.
enum Logits<'py> {
    /// float32 (float64 input cast to float32 first).
    F32(Bound<'py, PyArrayDyn<f32>>),
    /// float16 or bfloat16 bits; the dtype object gives the gradient back its dtype.
    Half(
        Bound<'py, PyArrayDyn<u16>>,
        Precision,
        Bound<'py, PyArrayDescr>,
    ),
}

struct Shaped<'py> {
    logits: Logits<'py>,
    shape: Vec<usize>,
    rows: usize,
    cols: usize,
}

fn read_logits<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Shaped<'py>> {
    read_matrix("logits", obj)
}

/// A float array of at least 2 dimensions as `[rows, cols]` rows of its last axis, named
/// `what` in errors.
fn read_matrix<'py>(what: &str, obj: &Bound<'py, PyAny>) -> PyResult<Shaped<'py>> {
    let array = as_array(what, obj)?;
    let shape = array.shape().to_vec();
    if shape.len() < 2 {
        return Err(value_error(format!(
            "{what} must have at least 2 dimensions, [rows, classes] or [..., classes] with the \
             classes last, but its shape is {}",
            shape_text(&shape)
        )));
    }
    let cols = shape[shape.len() - 1];
    let rows = shape[..shape.len() - 1].iter().product();
    let descr = array.dtype();
    let name = dtype_name(&descr)?;
    let logits = match name.as_str() {
        "float32" if descr.is_native_byteorder() != Some(false) => {
            Logits::F32(array.cast_into::<PyArrayDyn<f32>>()?)
        }
        "float64" if descr.is_native_byteorder() != Some(false) => {
            Logits::F32(astype(&array, "float32")?.cast_into::<PyArrayDyn<f32>>()?)
        }
        "float16" if descr.is_native_byteorder() != Some(false) => {
            Logits::Half(half_bits(&array)?, Precision::F16, descr)
        }
        "bfloat16" => Logits::Half(half_bits(&array)?, Precision::Bf16, descr),
        _ => {
            return Err(value_error(format!(
                "{what} {} dtype {} ({}); expected float32, float16, bfloat16 (ml_dtypes) or \
                 float64 (computed in float32)",
                if what == "logits" { "have" } else { "has" },
                name,
                descr.str()?
            )));
        }
    };
    Ok(Shaped {
        logits,
        shape,
        rows,
        cols,
    })
}

/// A borrowed array's data as a slice (a `ValueError` where it is not contiguous).
fn slice<'a, T: numpy::Element>(a: &'a numpy::PyReadonlyArrayDyn<'_, T>) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|e| value_error(e.to_string()))
}

/// What a cross-entropy call reads while it holds the GIL: its options (`**options`), its
/// logits and its targets, checked in that order.
struct Inputs<'py> {
    options: CrossEntropyOptions,
    logits: Shaped<'py>,
    target: TargetData<'py>,
}

fn read_inputs<'py>(
    py: Python<'py>,
    method: &str,
    logits: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    options: Option<&Bound<'py, PyDict>>,
) -> PyResult<Inputs<'py>> {
    let options = loss_options(py, method, options)?;
    let logits = read_logits(logits)?;
    let target = read_target(target, &logits.shape)?;
    Ok(Inputs {
        options,
        logits,
        target,
    })
}

/// The targets, owned or borrowed as the library wants them.
enum TargetData<'py> {
    Labels64(Bound<'py, PyArrayDyn<i64>>),
    Labels(Vec<i64>),
    Probs(Bound<'py, PyArrayDyn<f32>>),
}

/// Targets borrowed read-only for a call that lets go of the GIL.
enum TargetView<'a, 'py> {
    Labels64(numpy::PyReadonlyArrayDyn<'py, i64>),
    Labels(&'a [i64]),
    Probs(numpy::PyReadonlyArrayDyn<'py, f32>),
}

impl<'py> TargetData<'py> {
    fn readonly(&self) -> TargetView<'_, 'py> {
        match self {
            TargetData::Labels64(a) => TargetView::Labels64(a.readonly()),
            TargetData::Labels(v) => TargetView::Labels(v),
            TargetData::Probs(a) => TargetView::Probs(a.readonly()),
        }
    }
}

impl TargetView<'_, '_> {
    /// The targets as the library takes them.
    fn targets(&self) -> PyResult<Targets<'_>> {
        let err = |e: numpy::AsSliceError| value_error(e.to_string());
        Ok(match self {
            TargetView::Labels64(a) => Targets::Classes(a.as_slice().map_err(err)?),
            TargetView::Labels(v) => Targets::Classes(v),
            TargetView::Probs(a) => Targets::Probabilities(a.as_slice().map_err(err)?),
        })
    }
}

fn read_target<'py>(obj: &Bound<'py, PyAny>, logits_shape: &[usize]) -> PyResult<TargetData<'py>> {
    let array = as_array("target", obj)?;
    let descr = array.dtype();
    let name = dtype_name(&descr)?;
    let leading = &logits_shape[..logits_shape.len() - 1];
    let native = descr.is_native_byteorder() != Some(false);
    let check_shape = |want: &[usize], kind: &str| {
        if array.shape() == want {
            Ok(())
        } else {
            Err(value_error(format!(
                "target holds {kind}, so its shape must be {}, but it is {} (logits {})",
                shape_text(want),
                shape_text(array.shape()),
                shape_text(logits_shape)
            )))
        }
    };
    match name.as_str() {
        "int64" if native => {
            check_shape(leading, "class indices (an integer dtype)")?;
            Ok(TargetData::Labels64(array.cast_into::<PyArrayDyn<i64>>()?))
        }
        "int32" if native => {
            check_shape(leading, "class indices (an integer dtype)")?;
            let labels = array.cast_into::<PyArrayDyn<i32>>()?;
            let readonly = labels.readonly();
            let slice = readonly
                .as_slice()
                .map_err(|e| value_error(e.to_string()))?;
            Ok(TargetData::Labels(
                slice.iter().map(|&v| i64::from(v)).collect(),
            ))
        }
        "float32" | "float64" | "float16" | "bfloat16" => {
            check_shape(logits_shape, "probabilities (a float dtype)")?;
            let probs = if name == "float32" && native {
                array.cast_into::<PyArrayDyn<f32>>()?
            } else {
                astype(&array, "float32")?.cast_into::<PyArrayDyn<f32>>()?
            };
            Ok(TargetData::Probs(probs))
        }
        _ => Err(value_error(format!(
            "target has dtype {} ({}); expected int64 or int32 class indices of the logits' \
             leading shape, or float32/float64/float16/bfloat16 probabilities of the logits' shape",
            name,
            descr.str()?
        ))),
    }
}

fn parse_reduction(text: &str) -> PyResult<Reduction> {
    match text {
        "mean" => Ok(Reduction::Mean),
        "sum" => Ok(Reduction::Sum),
        "none" => Ok(Reduction::None),
        _ => Err(value_error(format!(
            "invalid option reduction = {text:?}: must be \"mean\", \"sum\" or \"none\""
        ))),
    }
}

/// The keyword arguments `loss_options` takes.
const LOSS_OPTIONS: [&str; 6] = [
    "weight",
    "ignore_index",
    "reduction",
    "label_smoothing",
    "z_loss",
    "softcap",
];

/// The loss options of a call, from its keyword arguments (`**options`): weight, ignore_index,
/// reduction, label_smoothing, z_loss, softcap, with PyTorch's defaults. The one place that
/// lists them for `cross_entropy`, `linear_cross_entropy` and `_vocab_cross_entropy`; an
/// unknown keyword is a `TypeError`, as Python gives for a function that does not take it.
/// Read in the order the explicit signatures read them before (reduction first, weight
/// after the plain numbers), so a call with several bad options names the same one.
fn loss_options(
    py: Python<'_>,
    method: &str,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<CrossEntropyOptions> {
    let mut options = CrossEntropyOptions::default();
    let Some(kwargs) = kwargs else {
        return Ok(options);
    };
    for key in kwargs.keys() {
        let key: String = key.extract()?;
        if !LOSS_OPTIONS.contains(&key.as_str()) {
            return Err(PyTypeError::new_err(format!(
                "{method}() got an unexpected keyword argument '{key}'"
            )));
        }
    }
    let get = |name: &str| kwargs.get_item(name);
    // As PyO3 words a bad argument: "argument 'name': <the conversion's message>".
    let arg = |name: &'static str| {
        move |e: PyErr| PyTypeError::new_err(format!("argument '{name}': {}", e.value(py)))
    };
    if let Some(v) = get("reduction")? {
        options.reduction = parse_reduction(&v.extract::<String>().map_err(arg("reduction"))?)?;
    }
    if let Some(v) = get("ignore_index")? {
        options.ignore_index = v.extract().map_err(arg("ignore_index"))?;
    }
    if let Some(v) = get("label_smoothing")? {
        options.label_smoothing = v.extract::<f64>().map_err(arg("label_smoothing"))? as f32;
    }
    options.weight = read_weight(py, get("weight")?.as_ref())?;
    if let Some(v) = get("z_loss")? {
        options.z_loss = v.extract::<f64>().map_err(arg("z_loss"))? as f32;
    }
    if let Some(v) = get("softcap")? {
        let softcap: Option<f64> = v.extract().map_err(arg("softcap"))?;
        options.softcap = softcap.unwrap_or(0.0) as f32;
    }
    Ok(options)
}

/// A loss as Python gets it: a float for "mean" and "sum", else the row losses as an array
/// of the logits' leading shape.
fn loss_object<'py>(
    py: Python<'py>,
    reduction: Reduction,
    loss: f32,
    row_loss: Vec<f32>,
    leading: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    match reduction {
        Reduction::None => shaped(py, row_loss, leading, None),
        _ => Ok(f64::from(loss).into_pyobject(py)?.into_any()),
    }
}

fn read_weight(py: Python<'_>, weight: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<f32>>> {
    let Some(weight) = weight else {
        return Ok(None);
    };
    if weight.is_none() {
        return Ok(None);
    }
    let numpy = py.import("numpy")?;
    let array = numpy
        .call_method1("ascontiguousarray", (weight, "float32"))
        .map_err(|e| value_error(format!("weight must be an array of numbers: {e}")))?;
    let array = array.cast_into::<PyArrayDyn<f32>>()?;
    if array.ndim() != 1 {
        return Err(value_error(format!(
            "weight must be 1-D (one weight per class), but its shape is {}",
            shape_text(array.shape())
        )));
    }
    Ok(Some(array.to_vec()?))
}

/// Reshapes a flat result to `shape`, then views it as `dtype` when given (float16 and
/// bfloat16 results come back as their bits).
fn shaped<'py, T: numpy::Element>(
    py: Python<'py>,
    data: Vec<T>,
    shape: &[usize],
    dtype: Option<&Bound<'py, PyArrayDescr>>,
) -> PyResult<Bound<'py, PyAny>> {
    let flat = PyArray1::from_vec(py, data);
    let array = flat.reshape(shape.to_vec())?.into_any();
    match dtype {
        Some(dtype) => array.call_method1("view", (dtype,)),
        None => Ok(array),
    }
}

/// A GPU device, queue and compiled kernels, reused across calls.
///
/// backend: "auto" (honours WGPU_BACKEND, e.g. "vulkan,gl"), "vulkan", "metal", "dx12" or
/// "gl". adapter: a case-insensitive substring of the adapter's name (None honours
/// WGPU_ADAPTER_NAME); with neither, the best adapter (a hardware GPU before a software one).
/// The first matching adapter that opens a device is used.
///
/// A Context may be shared by several Python threads at once: the GIL is released while the
/// GPU works, and the calls run concurrently on one queue.
///
/// poison_outputs (keyword, a debugging aid the tests use): fill the output buffers with NaN
/// before each dispatch, so an element a kernel fails to write shows up as NaN.
///
/// Raises ValueError for an unknown backend name, DeviceError when no adapter matches.
#[pyclass(frozen, module = "ml_softmax", name = "Context")]
struct PyContext {
    inner: Context,
}

fn adapter_dict<'py>(
    py: Python<'py>,
    info: &ml_softmax::wgpu::AdapterInfo,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("name", &info.name)?;
    dict.set_item("backend", format!("{:?}", info.backend).to_lowercase())?;
    dict.set_item("type", format!("{:?}", info.device_type).to_lowercase())?;
    dict.set_item("driver", &info.driver)?;
    dict.set_item("driver_info", &info.driver_info)?;
    Ok(dict)
}

#[pymethods]
impl PyContext {
    #[new]
    #[pyo3(signature = (backend = "auto", adapter = None, *, poison_outputs = false))]
    fn new(
        py: Python<'_>,
        backend: &str,
        adapter: Option<String>,
        poison_outputs: bool,
    ) -> PyResult<Self> {
        let backend: BackendChoice = backend.parse().map_err(to_py)?;
        let options = ContextOptions {
            backend,
            adapter_name: adapter,
            poison_outputs,
            ..Default::default()
        };
        let inner = py
            .detach(|| Context::with_options(&options))
            .map_err(to_py)?;
        Ok(Self { inner })
    }

    /// The adapter in use: a dict with name, backend, type, driver, driver_info.
    #[getter]
    fn adapter<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        adapter_dict(py, self.inner.adapter_info())
    }

    /// Whether this adapter takes float16 logits (it has wgpu's SHADER_F16 feature; lavapipe
    /// does, llvmpipe GL does not). bfloat16 works on every adapter.
    #[getter]
    fn float16(&self) -> bool {
        self.inner
            .device()
            .features()
            .contains(ml_softmax::wgpu::Features::SHADER_F16)
    }

    fn __repr__(&self) -> String {
        format!("ml_softmax.Context({})", self.inner.describe())
    }

    /// cross_entropy(logits, target, *, weight=None, ignore_index=-100, reduction="mean",
    /// label_smoothing=0.0, z_loss=0.0, softcap=None) -> (loss, grad)
    ///
    /// The cross-entropy loss and its gradient dloss/dlogits on this context's adapter.
    /// Arguments, results, semantics and errors: see help(ml_softmax.cross_entropy).
    #[pyo3(signature = (logits, target, *, **options),
        text_signature = "(self, /, logits, target, *, weight=None, ignore_index=-100, \
            reduction='mean', label_smoothing=0.0, z_loss=0.0, softcap=None)")]
    fn cross_entropy<'py>(
        &self,
        py: Python<'py>,
        logits: &Bound<'py, PyAny>,
        target: &Bound<'py, PyAny>,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let Inputs {
            options,
            logits:
                Shaped {
                    logits,
                    shape,
                    rows,
                    cols,
                },
            target,
        } = read_inputs(py, "cross_entropy", logits, target, options)?;
        // Borrow everything as slices before letting go of the GIL.
        let target = target.readonly();
        let targets = target.targets()?;
        let ctx = &self.inner;
        let leading = &shape[..shape.len() - 1];
        let (loss, row_loss, grad) = match &logits {
            Logits::F32(a) => {
                let z = a.readonly();
                let z = slice(&z)?;
                let out = py
                    .detach(|| {
                        ctx.cross_entropy_targets(z, targets, rows, cols, &options, Strategy::Auto)
                    })
                    .map_err(to_py)?;
                (out.loss, out.row_loss, shaped(py, out.grad, &shape, None)?)
            }
            Logits::Half(a, precision, dtype) => {
                let z = a.readonly();
                let z = slice(&z)?;
                let out = py
                    .detach(|| {
                        ctx.cross_entropy_half(&HalfCrossEntropy {
                            logits: z,
                            precision: *precision,
                            targets,
                            rows,
                            cols,
                            options: &options,
                            strategy: Strategy::Auto,
                        })
                    })
                    .map_err(to_py)?;
                (
                    out.loss,
                    out.row_loss,
                    shaped(py, out.grad, &shape, Some(dtype))?,
                )
            }
        };
        let loss = loss_object(py, options.reduction, loss, row_loss, leading)?;
        PyTuple::new(py, [loss, grad])
    }

    /// _vocab_cross_entropy(logits, target, vocab_start, vocab_size, all_reduce, *, weight,
    /// ignore_index, reduction, label_smoothing, z_loss, softcap) -> (loss, grad_shard)
    ///
    /// The native half of ml_softmax.parallel.cross_entropy (see its help): this rank's
    /// shard of a vocabulary-parallel cross-entropy, merged through `all_reduce(array, op)`.
    #[pyo3(signature = (logits, target, vocab_start, vocab_size, all_reduce, *, **options),
        text_signature = "(self, /, logits, target, vocab_start, vocab_size, all_reduce, *, \
            weight=None, ignore_index=-100, reduction='mean', label_smoothing=0.0, z_loss=0.0, \
            softcap=None)")]
    #[allow(clippy::too_many_arguments)]
    fn _vocab_cross_entropy<'py>(
        &self,
        py: Python<'py>,
        logits: &Bound<'py, PyAny>,
        target: &Bound<'py, PyAny>,
        vocab_start: usize,
        vocab_size: usize,
        all_reduce: &Bound<'py, PyAny>,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        // Class labels are the whole batch's, of the logits' leading shape, as for an
        // unsharded call; probabilities are this shard's columns, of the logits' shape.
        let Inputs {
            options,
            logits: input,
            target,
        } = read_inputs(py, "_vocab_cross_entropy", logits, target, options)?;
        let (shape, rows, cols) = (&input.shape, input.rows, input.cols);
        let Logits::F32(z) = &input.logits else {
            return Err(value_error(
                "ml_softmax.parallel takes float32 or float64 logits (float16 and bfloat16 \
                 shards are not supported yet)"
                    .into(),
            ));
        };
        let target = target.readonly();
        let targets = target.targets()?;
        let z = z.readonly();
        let z = slice(&z)?;
        let shard = VocabShard {
            logits: z,
            targets,
            rows,
            cols,
            vocab_start,
            vocab_size,
        };
        let ctx = &self.inner;
        let all_reduce = all_reduce.clone().unbind();
        // The callback's Python error, raised again once the library has returned.
        let mut raised: Option<PyErr> = None;
        let result = py.detach(|| {
            ctx.vocab_parallel_cross_entropy(&shard, &options, |v, op| {
                Python::attach(|py| call_all_reduce(py, &all_reduce, v, op)).map_err(|e| {
                    raised = Some(e);
                    Error::Validation("the all_reduce callable failed".into())
                })
            })
        });
        if let Some(e) = raised {
            return Err(e);
        }
        let out = result.map_err(to_py)?;
        let leading = &shape[..shape.len() - 1];
        let loss = loss_object(py, options.reduction, out.loss, out.row_loss, leading)?;
        let grad = shaped(py, out.grad, shape, None)?;
        PyTuple::new(py, [loss, grad])
    }

    /// linear_cross_entropy(hidden, classifier, target, *, bias=None, weight=None,
    /// ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0, softcap=None)
    /// -> (loss, d_hidden, d_classifier[, d_bias])
    ///
    /// The fused linear + cross-entropy on this context's adapter. See
    /// help(ml_softmax.linear_cross_entropy).
    #[pyo3(signature = (hidden, classifier, target, *, bias = None, **options),
        text_signature = "(self, /, hidden, classifier, target, *, bias=None, weight=None, \
            ignore_index=-100, reduction='mean', label_smoothing=0.0, z_loss=0.0, softcap=None)")]
    fn linear_cross_entropy<'py>(
        &self,
        py: Python<'py>,
        hidden: &Bound<'py, PyAny>,
        classifier: &Bound<'py, PyAny>,
        target: &Bound<'py, PyAny>,
        bias: Option<&Bound<'py, PyAny>>,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let options = loss_options(py, "linear_cross_entropy", options)?;
        linear::linear_cross_entropy(&self.inner, py, hidden, classifier, target, bias, &options)
    }

    /// softmax(logits) -> probabilities of each row, same shape and dtype (float32 for
    /// float64 input). See help(ml_softmax.softmax).
    fn softmax<'py>(
        &self,
        py: Python<'py>,
        logits: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.softmax_impl(py, logits, SoftmaxKind::Softmax)
    }

    /// log_softmax(logits) -> log-probabilities of each row, same shape and dtype (float32
    /// for float64 input). See help(ml_softmax.log_softmax).
    fn log_softmax<'py>(
        &self,
        py: Python<'py>,
        logits: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.softmax_impl(py, logits, SoftmaxKind::LogSoftmax)
    }
}

impl PyContext {
    fn softmax_impl<'py>(
        &self,
        py: Python<'py>,
        logits: &Bound<'py, PyAny>,
        kind: SoftmaxKind,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Shaped {
            logits,
            shape,
            rows,
            cols,
        } = read_logits(logits)?;
        let ctx = &self.inner;
        match &logits {
            Logits::F32(a) => {
                let z = a.readonly();
                let z = slice(&z)?;
                let p = py
                    .detach(|| ctx.softmax_with(z, rows, cols, kind, Strategy::Auto))
                    .map_err(to_py)?;
                shaped(py, p, &shape, None)
            }
            Logits::Half(a, precision, dtype) => {
                let z = a.readonly();
                let z = slice(&z)?;
                let p = py
                    .detach(|| ctx.softmax_half(z, *precision, rows, cols, kind, Strategy::Auto))
                    .map_err(to_py)?;
                shaped(py, p, &shape, Some(dtype))
            }
        }
    }
}

/// Calls the caller's `all_reduce(array, op)` on a float32 copy of `v` and writes the
/// result back, checking that it has the same shape.
fn call_all_reduce(
    py: Python<'_>,
    all_reduce: &Py<PyAny>,
    v: &mut [f32],
    op: ReduceOp,
) -> PyResult<()> {
    let name = match op {
        ReduceOp::Max => "max",
        ReduceOp::Sum => "sum",
    };
    let array = PyArray1::from_slice(py, v);
    let result = all_reduce.bind(py).call1((array, name))?;
    let numpy = py.import("numpy")?;
    let reduced = numpy
        .call_method1("ascontiguousarray", (&result, "float32"))
        .map_err(|e| {
            value_error(format!(
                "all_reduce(array, {name:?}) must return an array: {e}"
            ))
        })?
        .cast_into::<PyArrayDyn<f32>>()?;
    if reduced.shape() != [v.len()] {
        return Err(value_error(format!(
            "all_reduce(array, {name:?}) returned shape {}, but the array it was given has shape \
             ({},): it must return the reduced array of the same shape and dtype",
            shape_text(reduced.shape()),
            v.len()
        )));
    }
    v.copy_from_slice(
        reduced
            .readonly()
            .as_slice()
            .map_err(|e| value_error(e.to_string()))?,
    );
    Ok(())
}

/// _adapters() -> the adapters wgpu finds (WGPU_BACKEND honoured), best first, as dicts.
#[pyfunction]
fn _adapters(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    let backend = BackendChoice::Auto;
    backend.check_env().map_err(to_py)?;
    let list = py.detach(|| {
        ml_softmax::list_adapters(backend)
            .iter()
            .map(|a| a.get_info())
            .collect::<Vec<_>>()
    });
    list.iter().map(|info| adapter_dict(py, info)).collect()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyContext>()?;
    m.add_function(wrap_pyfunction!(_adapters, m)?)?;
    m.add("DeviceError", m.py().get_type::<DeviceError>())?;
    Ok(())
}
