// For every io file but the pair files io_*x8.wgsl (the host puts this behind it): blocks are taken one
// at a time (PAIRS false), and the row code's pair functions, which it calls only with
// PAIRS, are two blocks.
// Defines: PAIRS = false, load_logit8, store_out8.
// Needs: load_logit4, store_out4 (the io file); Pair (row_softmax.wgsl).

const PAIRS = false;

fn load_logit8(i: u32) -> Pair {
    return Pair(load_logit4(i), load_logit4(i + 4u));
}

fn store_out8(i: u32, p: Pair) {
    store_out4(i, p.a);
    store_out4(i + 4u, p.b);
}
