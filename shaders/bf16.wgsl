// bfloat16 in u32 words, for io_bf16.wgsl, io_bf16x4.wgsl and io_bf16x8.wgsl (the host
// puts this file in front of them). WGSL has no bf16 type, so two bf16 share one u32 word: element i is the
// low half of word i / 2 when i is even, the high half when odd. A bf16 is the top 16 bits of
// an f32, so reading is a shift; writing rounds to nearest even.
// Defines: unpack_bf16, to_bf16, bf16_half, unpack_block, pack_block.
// Needs: nothing.

// The two bf16 of a word, as f32: (low half, high half).
fn unpack_bf16(word: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
}

// f32 -> bf16 bits, rounding to nearest even; NaN stays NaN (quiet).
fn to_bf16(v: f32) -> u32 {
    let bits = bitcast<u32>(v);
    if (bits & 0x7fffffffu) > 0x7f800000u {
        return (bits >> 16u) | 0x40u;
    }
    return (bits + 0x7fffu + ((bits >> 16u) & 1u)) >> 16u;
}

// Element i = `v` as one half of its word, for a store that must leave the other half alone
// (another lane may be writing it at the same time): `atomicAnd(word, .x)` clears the half,
// then `atomicOr(word, .y)` sets it.
fn bf16_half(i: u32, v: f32) -> vec2<u32> {
    let shift = (i & 1u) * 16u;
    return vec2<u32>(~(0xffffu << shift), to_bf16(v) << shift);
}

// The 4 bf16 of a block (2 words) as f32.
fn unpack_block(w: vec2<u32>) -> vec4<f32> {
    return vec4<f32>(unpack_bf16(w.x), unpack_bf16(w.y));
}

// 4 f32 as the 2 words of a block of bf16.
fn pack_block(v: vec4<f32>) -> vec2<u32> {
    return vec2<u32>(to_bf16(v.x) | (to_bf16(v.y) << 16u), to_bf16(v.z) | (to_bf16(v.w) << 16u));
}
