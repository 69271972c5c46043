// Element storage of row_softmax.wgsl: f16 logits in, f16 output, bound as arrays of 8-byte
// blocks (Block8: words32.wgsl or words64.wgsl, put behind, with f16.wgsl), so each block of
// 4 columns is one 8-byte access, unpacked with unpack2x16float (or f16.wgsl's bit
// operations: F16_BITS); all arithmetic in f32. Needs Features::SHADER_F16 (16-bit storage,
// for the loose columns' `out_words`). The f16 twin of io_f32x4.wgsl (read it for the
// layout): blocks are whole blocks of the binding, the loose columns at the row ends are
// stored through `out_words` (binding 9, the same range as `out`, as scalars). Made in place
// like io_f32.wgsl (then `out_words` views the logits).
//
// Why: the scalar f16 file (io_f16.wgsl) ran at 18% of the copy kernel on lavapipe (8192x1000:
// 19.9 ms, against 9.6 ms for f32 moving twice the bytes): every element was its own access.
// Why u32 words and unpack2x16float rather than vec4<f16>: on lavapipe a block is then one
// access of 2 components (1 with words64.wgsl) instead of 4, which the driver pays for per
// component (4096x4096: 28.8 ms as vec4<f16>, 25.5-26.4 ms as u32 or u64 words).
enable f16;

@group(0) @binding(1) var<storage, read> logits: array<Block8>;
@group(0) @binding(6) var<storage, read_write> out: array<Block8>;
@group(0) @binding(9) var<storage, read_write> out_words: array<f16>;

fn load_logit(i: u32) -> f32 {
    return load_logit4(i - i % 4u)[i % 4u];
}

// Convert with f16.wgsl's bit operations instead of unpack2x16float / pack2x16float (the
// host sets it on software adapters; see f16.wgsl).
override F16_BITS: bool = false;

fn load_logit4(i: u32) -> vec4<f32> {
    let bits = bits8(logits[i / 4u]);
    if F16_BITS {
        let h = vec4<u32>(bits.x & 0xffffu, bits.x >> 16u, bits.y & 0xffffu, bits.y >> 16u);
        return f32_of_f16(h);
    }
    return vec4<f32>(unpack2x16float(bits.x), unpack2x16float(bits.y));
}

fn store_out(i: u32, v: f32) {
    out_words[i] = f16(v);
}

fn store_out4(i: u32, v: vec4<f32>) {
    if F16_BITS {
        let h = f16_of_f32(v);
        out[i / 4u] = block8(vec2<u32>(h.x | (h.y << 16u), h.z | (h.w << 16u)));
        return;
    }
    out[i / 4u] = block8(vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw)));
}
