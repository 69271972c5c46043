// How the vector io files (io_*x4.wgsl, io_f32x8.wgsl) hold a block in memory: as 32-bit
// words. The host puts this file or words64.wgsl behind the io file (whose `enable f16;` must
// open the module); both define the same names, so the io files read and write plain bits
// whatever the word size:
//   Block16 / bits16 / block16   a block of 16 bytes (4 f32) as 4 u32 bits, and back
//   Block8  / bits8  / block8    a block of 8 bytes (4 f16 or bf16) as 2 u32 bits, and back
// One block is one storage access either way (see words64.wgsl for why the size of the words
// in it matters).
// Defines: Block16, bits16, block16, Block8, bits8, block8 (with 32-bit words).
// Needs: nothing.

alias Block16 = vec4<u32>;
alias Block8 = vec2<u32>;

fn bits16(b: Block16) -> vec4<u32> {
    return b;
}

fn block16(bits: vec4<u32>) -> Block16 {
    return bits;
}

fn bits8(b: Block8) -> vec2<u32> {
    return b;
}

fn block8(bits: vec2<u32>) -> Block8 {
    return bits;
}
