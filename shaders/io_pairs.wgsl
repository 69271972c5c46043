// For the pair files io_*x8.wgsl (the host puts this behind them, as io_single.wgsl behind the
// others): blocks go two by two (PAIRS), and a lone block or column is read from its unit.
// Defines: PAIRS = true, load_logit4, load_logit.
// Needs: load_logit8 (the pair file io_*x8.wgsl); Pair (row_softmax.wgsl).

const PAIRS = true;

// The block at element `i` (a multiple of 4): its unit, read whole, and the half it is.
fn load_logit4(i: u32) -> vec4<f32> {
    let p = load_logit8(i - i % 8u);
    return select(p.a, p.b, i % 8u != 0u);
}

fn load_logit(i: u32) -> f32 {
    return load_logit4(i - i % 4u)[i % 4u];
}
