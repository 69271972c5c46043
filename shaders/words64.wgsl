// words32.wgsl's names with blocks held as 64-bit words (needs Features::SHADER_INT64): a
// 16-byte block is one vec2<u64>, an 8-byte block one u64; the low u32 of a u64 comes first
// in memory (little-endian, as every adapter wgpu runs on), so the bits are the same.
// Defines: the names of words32.wgsl, with 64-bit words.
// Needs: Features::SHADER_INT64 (`u64`).
//
// Why: llvmpipe (lavapipe) turns every storage access into a loop over the 8 lanes of its
// SIMD vector with a bounds check and a load or store per *component* of the accessed value,
// so a block in 2 components of 64 bits costs about half the checks and loads of 4 of 32.
// The copy kernel and the fused kernel both got faster on lavapipe, the fused one less (it is
// bound by more than its accesses), and more again with 32-byte units of two blocks
// (io_f32x8.wgsl, which takes its conversions from this file); figures: BENCHMARKS.md,
// "What moved the kernel" and "Figures moved from code comments". The host uses this file
// only on software adapters (Context::words64), where it was measured.

alias Block16 = vec2<u64>;
alias Block8 = u64;

fn bits16(b: Block16) -> vec4<u32> {
    return vec4<u32>(u32(b.x), u32(b.x >> 32u), u32(b.y), u32(b.y >> 32u));
}

fn block16(bits: vec4<u32>) -> Block16 {
    return vec2<u64>(u64(bits.x) | (u64(bits.y) << 32u), u64(bits.z) | (u64(bits.w) << 32u));
}

fn bits8(b: Block8) -> vec2<u32> {
    return vec2<u32>(u32(b), u32(b >> 32u));
}

fn block8(bits: vec2<u32>) -> Block8 {
    return u64(bits.x) | (u64(bits.y) << 32u);
}
