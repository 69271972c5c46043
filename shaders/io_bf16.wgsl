// Element storage of row_softmax.wgsl: bf16 logits in, bf16 output; all arithmetic in f32.
// WGSL has no bf16 type, so two bf16 share one u32 word: element i is the low half of word
// i / 2 when i is even, the high half when odd. A bf16 is the top 16 bits of an f32, so
// reading is a shift; writing rounds to nearest even.
//
// Two lanes can own the two halves of one word (at the end of a row, or where an odd row
// length puts a row boundary inside a word), so the output words are atomics and each half
// is written with atomicAnd (clear it) then atomicOr (set it): the other half is never
// touched, whatever the timing. No in-place variant: the logits would have to be atomics too.

@group(0) @binding(1) var<storage, read> logits: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<atomic<u32>>;

fn load_logit(i: u32) -> f32 {
    let word = logits[i >> 1u];
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u));
}

fn load_logit4(i: u32) -> vec4<f32> {
    return vec4<f32>(load_logit(i), load_logit(i + 1u), load_logit(i + 2u), load_logit(i + 3u));
}

// f32 -> bf16 bits, rounding to nearest even; NaN stays NaN (quiet).
fn to_bf16(v: f32) -> u32 {
    let bits = bitcast<u32>(v);
    if (bits & 0x7fffffffu) > 0x7f800000u {
        return (bits >> 16u) | 0x40u;
    }
    return (bits + 0x7fffu + ((bits >> 16u) & 1u)) >> 16u;
}

fn store_out(i: u32, v: f32) {
    let shift = (i & 1u) * 16u;
    atomicAnd(&out[i >> 1u], ~(0xffffu << shift));
    atomicOr(&out[i >> 1u], to_bf16(v) << shift);
}

fn store_out4(i: u32, v: vec4<f32>) {
    store_out(i, v.x);
    store_out(i + 1u, v.y);
    store_out(i + 2u, v.z);
    store_out(i + 3u, v.w);
}
