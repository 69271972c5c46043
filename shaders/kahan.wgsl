// Kahan-compensated f32 sums, prepended to batch_sum.wgsl and row_softmax.wgsl (the loss of a
// batch is a sum over its rows). Adding n floats one by one in f32 loses up to ~n ulp;
// carrying the rounding error of each addition into the next keeps it at a few ulp whatever
// n is.
// Defines: Kahan, kahan_add.
// Needs: nothing.

struct Kahan {
    sum: f32,
    carry: f32, // the rounding error of the last addition, taken off the next value
}

fn kahan_add(k: ptr<function, Kahan>, x: f32) {
    let y = x - (*k).carry;
    let t = (*k).sum + y;
    // Once the sum is infinite (a row loss of +inf) the compensation would be inf - inf = NaN
    // under strict IEEE arithmetic: drop it, so +inf stays +inf.
    let finite = (bitcast<u32>(t) & 0x7fffffffu) < 0x7f800000u;
    (*k).carry = select(0.0, (t - (*k).sum) - y, finite);
    (*k).sum = t;
}
