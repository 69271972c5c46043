// Element storage of row_softmax.wgsl: bf16 logits in, bf16 output, a block of 4 columns
// being one vec2<u32> (two words of two bf16 each, low half first, as in io_bf16.wgsl); all
// arithmetic in f32. Blocks are whole vec2s of the binding (the row code aligns them, see
// io_f32x4.wgsl), so a block's two words belong to one lane and are stored plainly. The loose
// columns at the row ends can share a word with the neighbouring row's, which another lane
// writes, so they go through `out_words` (binding 9, the same range as `out`) with
// atomicAnd / atomicOr on their half, as io_bf16.wgsl does for every element. A word is
// either inside a block or holds no block column, so no word is written both ways.
// No in-place variant (the logits would be read while a neighbour's atomics change the
// other half of a loose word).
//
// Why: io_bf16.wgsl, two atomics per element, ran at 7% of the copy kernel on lavapipe
// (8192x1000: 54.7 ms, against 9.6 ms for f32 moving twice the bytes).

@group(0) @binding(1) var<storage, read> logits: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read_write> out: array<vec2<u32>>;
@group(0) @binding(9) var<storage, read_write> out_words: array<atomic<u32>>;

// The two bf16 of a word, as f32: (low half, high half).
fn unpack_bf16(word: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
}

fn load_logit(i: u32) -> f32 {
    let word = logits[i / 4u][(i / 2u) % 2u];
    return unpack_bf16(word)[i % 2u];
}

fn load_logit4(i: u32) -> vec4<f32> {
    let words = logits[i / 4u];
    return vec4<f32>(unpack_bf16(words.x), unpack_bf16(words.y));
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
    atomicAnd(&out_words[i >> 1u], ~(0xffffu << shift));
    atomicOr(&out_words[i >> 1u], to_bf16(v) << shift);
}

fn store_out4(i: u32, v: vec4<f32>) {
    out[i / 4u] = vec2<u32>(to_bf16(v.x) | (to_bf16(v.y) << 16u), to_bf16(v.z) | (to_bf16(v.w) << 16u));
}
