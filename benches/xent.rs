//! Criterion benches for developers: the fused cross-entropy (device-resident, every
//! strategy) and the host API round trip, on the default adapter.
//!
//! ```text
//! cargo bench --bench xent                 # all
//! cargo bench --bench xent -- 1024x32000   # one shape
//! ```
//!
//! Criterion times wall clock around submit + wait; `ml-softmax bench` is the reference
//! benchmark (GPU timestamps, the copy kernel as speed of light, JSON, plots).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ml_softmax::wgpu::{self, util::DeviceExt};
use ml_softmax::{
    Context, CrossEntropyOptions, DeviceCrossEntropy, DeviceTargets, Precision, Strategy,
};

const SHAPES: [(usize, usize); 4] = [(8192, 1000), (1024, 32000), (64, 262_144), (8, 1000)];

fn inputs(rows: usize, cols: usize) -> (Vec<f32>, Vec<i64>) {
    ml_softmax::reference::sample_batch(rows, cols, 0x2545_F491_4F6C_DD1D)
}

fn device(c: &mut Criterion) {
    let ctx = Context::new().expect("an adapter (see README: lavapipe without a GPU)");
    eprintln!("adapter: {}", ctx.describe());
    let mut strategies = vec![Strategy::Auto];
    strategies.extend(Strategy::all(ctx.has_subgroups()));
    for (rows, cols) in SHAPES {
        let (logits, labels) = inputs(rows, cols);
        let labels32: Vec<i32> = labels.iter().map(|&y| y as i32).collect();
        let init = |bytes: &[u8]| {
            ctx.device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: None,
                    contents: bytes,
                    usage: wgpu::BufferUsages::STORAGE,
                })
        };
        let z = init(bytemuck::cast_slice(&logits));
        let y = init(bytemuck::cast_slice(&labels32));
        let grad = init(bytemuck::cast_slice(&logits));
        let bufs = DeviceCrossEntropy {
            logits: z.slice(..),
            precision: Precision::F32,
            targets: DeviceTargets::Classes(y.slice(..)),
            grad: Some(grad.slice(..)),
            loss: None,
            row_loss: None,
            lse: None,
            upstream: None,
        };
        let mut group = c.benchmark_group(format!("device/{rows}x{cols}"));
        group.throughput(Throughput::Bytes((2 * rows * cols * 4) as u64));
        group.sample_size(10);
        let options = CrossEntropyOptions::default();
        for &strategy in &strategies {
            group.bench_function(strategy.to_string(), |b| {
                b.iter(|| {
                    let index = ctx
                        .cross_entropy_device(&bufs, rows, cols, &options, strategy)
                        .expect("runs");
                    ctx.device()
                        .poll(wgpu::PollType::Wait {
                            submission_index: Some(index),
                            timeout: None,
                        })
                        .expect("waits");
                })
            });
        }
        group.finish();
    }
}

fn host(c: &mut Criterion) {
    let ctx = Context::new().expect("an adapter");
    let mut group = c.benchmark_group("host");
    group.sample_size(10);
    for (rows, cols) in SHAPES {
        let (logits, labels) = inputs(rows, cols);
        let options = CrossEntropyOptions::default();
        group.bench_function(format!("{rows}x{cols}"), |b| {
            b.iter(|| {
                ctx.cross_entropy(&logits, &labels, rows, cols, &options)
                    .expect("runs")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, device, host);
criterion_main!(benches);
