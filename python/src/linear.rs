//! `Context.linear_cross_entropy`: numpy arrays to `ml_softmax::Context::linear_cross_entropy`
//! and back (shapes: hidden `[..., dim]`, classifier `[vocab, dim]`, target the hidden's
//! leading shape; gradients float32).

use ml_softmax::{Context, CrossEntropyOptions, LinearCrossEntropy, Matrix, Reduction};
use numpy::PyArrayMethods;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::{
    Logits, Shaped, TargetData, read_matrix, read_target, read_weight, shape_text, shaped, to_py,
    value_error,
};

/// A float array's data, borrowed for the call: f32 or half bits.
enum Borrowed<'py> {
    F32(numpy::PyReadonlyArrayDyn<'py, f32>),
    Half(numpy::PyReadonlyArrayDyn<'py, u16>, ml_softmax::Precision),
}

impl<'py> Borrowed<'py> {
    fn new(logits: &Logits<'py>) -> Self {
        match logits {
            Logits::F32(a) => Borrowed::F32(a.readonly()),
            Logits::Half(a, precision, _) => Borrowed::Half(a.readonly(), *precision),
        }
    }

    fn matrix(&self) -> PyResult<Matrix<'_>> {
        let err = |e: numpy::AsSliceError| value_error(e.to_string());
        Ok(match self {
            Borrowed::F32(a) => Matrix::F32(a.as_slice().map_err(err)?),
            Borrowed::Half(a, precision) => Matrix::Half(a.as_slice().map_err(err)?, *precision),
        })
    }
}

/// Reads the arrays, runs the library's call with the GIL released, and returns
/// `(loss, d_hidden, d_classifier)`, plus `d_bias` when a bias was given.
pub(crate) fn linear_cross_entropy<'py>(
    ctx: &Context,
    py: Python<'py>,
    hidden: &Bound<'py, PyAny>,
    classifier: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    bias: Option<&Bound<'py, PyAny>>,
    options: &CrossEntropyOptions,
) -> PyResult<Bound<'py, PyTuple>> {
    let Shaped {
        logits: h,
        shape,
        rows,
        cols: dim,
    } = read_matrix("hidden", hidden)?;
    let Shaped {
        logits: c,
        shape: c_shape,
        rows: vocab,
        cols: c_dim,
    } = read_matrix("classifier", classifier)?;
    if c_shape.len() != 2 || c_dim != dim {
        return Err(value_error(format!(
            "classifier must be [vocab, dim] with the hidden states' dim {dim}, but its shape \
             is {} (hidden {})",
            shape_text(&c_shape),
            shape_text(&shape)
        )));
    }
    let leading = &shape[..shape.len() - 1];
    let mut as_logits = leading.to_vec();
    as_logits.push(vocab);
    let labels: Vec<i64> = match read_target(target, &as_logits)? {
        TargetData::Labels64(a) => a.to_vec()?,
        TargetData::Labels(v) => v,
        TargetData::Probs(_) => {
            return Err(value_error(
                "linear_cross_entropy takes class indices (int64 or int32) only, not \
                 probability targets"
                    .into(),
            ));
        }
    };
    let bias = match bias.filter(|b| !b.is_none()) {
        Some(b) => Some(
            read_weight(py, Some(b))
                .map_err(|e| value_error(format!("bias: {e}")))?
                .unwrap_or_default(),
        ),
        None => None,
    };
    let (hb, cb) = (Borrowed::new(&h), Borrowed::new(&c));
    let call = LinearCrossEntropy {
        hidden: hb.matrix()?,
        classifier: cb.matrix()?,
        bias: bias.as_deref(),
        labels: &labels,
        rows,
        dim,
        vocab,
        options,
    };
    let out = py
        .detach(|| ctx.linear_cross_entropy(&call))
        .map_err(to_py)?;
    let loss = match options.reduction {
        Reduction::None => shaped(py, out.row_loss, leading, None)?,
        _ => f64::from(out.loss).into_pyobject(py)?.into_any(),
    };
    let mut items = vec![
        loss,
        shaped(py, out.grad_hidden, &shape, None)?,
        shaped(py, out.grad_classifier, &c_shape, None)?,
    ];
    if let Some(gb) = out.grad_bias {
        items.push(shaped(py, gb, &[vocab], None)?);
    }
    PyTuple::new(py, items)
}
