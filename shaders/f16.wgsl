// IEEE half floats held in u32 bits, for the f16 vector io files (io_f16x4.wgsl,
// io_f16x8.wgsl; the host puts this file behind them): a block's conversions
// (`unpack_block` / `pack_block`, at the end), by integer and f32 operations alone when
// F16_BITS is set (software adapters). `unpack2x16float` /
// `pack2x16float` do the same in one instruction on GPUs; llvmpipe runs them lane by lane
// (a scalar conversion per element), which made f16 markedly slower than bf16 there; these
// functions measured faster on lavapipe (BENCHMARKS.md, "Figures moved from code comments").
// Both functions work on the 4 columns of a block at once, each half in the low 16 bits.
// tests/gpu.rs checks them against the `half` crate: every one of the 65,536 halves, and f32
// values around every rounding boundary.
// Defines: F16_BITS (override), f32_of_f16, f16_of_f32, unpack_block, pack_block.
// Needs: nothing (the enable directive comes with the generated declarations).

// The halves `h` (low 16 bits of each) as f32, exactly. Normal halves are rebiased by an
// integer add to the exponent (no f32 arithmetic, so no denormal can be flushed); subnormal
// ones are their mantissa times 2^-24 (an exact f32 product); infinities and NaNs keep their
// payload.
fn f32_of_f16(h: vec4<u32>) -> vec4<f32> {
    let magnitude = h & vec4<u32>(0x7fffu);
    let sign = (h & vec4<u32>(0x8000u)) << vec4<u32>(16u);
    let shifted = magnitude << vec4<u32>(13u);
    let normal = bitcast<vec4<f32>>(shifted + vec4<u32>((127u - 15u) << 23u));
    let subnormal = vec4<f32>(magnitude) * 5.9604644775390625e-8; // 2^-24
    let special = bitcast<vec4<f32>>(shifted | vec4<u32>(0x7f800000u));
    var v = select(normal, subnormal, magnitude < vec4<u32>(0x0400u));
    v = select(v, special, magnitude >= vec4<u32>(0x7c00u));
    return bitcast<vec4<f32>>(bitcast<vec4<u32>>(v) | sign);
}

// `v` rounded to the nearest half (ties to even), as bits in the low 16 bits: overflow
// (|v| >= 65520) to infinity, results below 2^-14 to subnormal halves (or zero), NaN to a
// quiet NaN. Normal results round the f32 bits: add just under half a unit of the 13 bits
// dropped, plus the kept bit's parity, then shift.
fn f16_of_f32(v: vec4<f32>) -> vec4<u32> {
    let bits = bitcast<vec4<u32>>(v);
    let sign = (bits >> vec4<u32>(16u)) & vec4<u32>(0x8000u);
    let magnitude = bits & vec4<u32>(0x7fffffffu);
    let rebiased = magnitude - vec4<u32>((127u - 15u) << 23u);
    let parity = (rebiased >> vec4<u32>(13u)) & vec4<u32>(1u);
    let normal = (rebiased + vec4<u32>(0x0fffu) + parity) >> vec4<u32>(13u);
    // Below 2^-14: the subnormal half's mantissa is |v| * 2^24 rounded half to even, taken
    // from the f32's own bits (its significand shifted right by 126 - exponent; past 25 places
    // nothing is left), not by `round` on an f32: llvmpipe's `round` broke the tie 0.5 up on
    // one machine, where ties to even give 0 (tests/gpu.rs, f16_bit_conversions_...).
    let exponent = magnitude >> vec4<u32>(23u);
    let significand = (magnitude & vec4<u32>(0x7fffffu)) | vec4<u32>(0x800000u);
    let shift = min(vec4<u32>(126u) - exponent, vec4<u32>(25u)); // wraps, then 25, for |v| >= 2^-14
    let kept = significand >> shift;
    let rest = significand & ((vec4<u32>(1u) << shift) - vec4<u32>(1u));
    let half_unit = vec4<u32>(1u) << (shift - vec4<u32>(1u));
    let up = (rest > half_unit) | ((rest == half_unit) & ((kept & vec4<u32>(1u)) == vec4<u32>(1u)));
    let subnormal = kept + select(vec4<u32>(0u), vec4<u32>(1u), up);
    var h = select(normal, subnormal, magnitude < vec4<u32>(0x38800000u));
    h = select(h, vec4<u32>(0x7c00u), magnitude >= vec4<u32>(0x477ff000u));
    h = select(h, vec4<u32>(0x7e00u), magnitude > vec4<u32>(0x7f800000u));
    return h | sign;
}

// Convert with the bit operations above instead of unpack2x16float / pack2x16float (the host
// sets it on software adapters).
override F16_BITS: bool = false;

// The 4 halves of a block (2 words, low half first) as f32.
fn unpack_block(w: vec2<u32>) -> vec4<f32> {
    if F16_BITS {
        return f32_of_f16(vec4<u32>(w.x & 0xffffu, w.x >> 16u, w.y & 0xffffu, w.y >> 16u));
    }
    return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}

// 4 f32 as the 2 words of a block of halves.
fn pack_block(v: vec4<f32>) -> vec2<u32> {
    if F16_BITS {
        let h = f16_of_f32(v);
        return vec2<u32>(h.x | (h.y << 16u), h.z | (h.w << 16u));
    }
    return vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw));
}
