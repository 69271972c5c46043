//! Property tests for `npy`: `parse` never panics on hostile input, and every dtype and
//! shape round-trips through `to_bytes` and `parse`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// The command line's .npy reader and writer (src/npy.rs, not part of the library).
#[allow(dead_code)]
#[path = "../src/npy.rs"]
mod npy;
use npy::NpyData;
use proptest::prelude::*;

/// Random data of one of the four dtypes, `len` elements long.
fn data_strategy(len: usize) -> impl Strategy<Value = NpyData> {
    prop_oneof![
        prop::collection::vec(any::<u64>(), len)
            .prop_map(|bits| NpyData::F64(bits.into_iter().map(f64::from_bits).collect())),
        prop::collection::vec(any::<u32>(), len)
            .prop_map(|bits| NpyData::F32(bits.into_iter().map(f32::from_bits).collect())),
        prop::collection::vec(any::<u16>(), len).prop_map(NpyData::F16),
        prop::collection::vec(any::<i64>(), len).prop_map(NpyData::I64),
        prop::collection::vec(any::<i32>(), len).prop_map(NpyData::I32),
    ]
}

/// A shape of 0 to 4 dimensions of 0 to 5 each, with data of matching length.
fn array_strategy() -> impl Strategy<Value = (Vec<usize>, NpyData)> {
    prop::collection::vec(0usize..6, 0..5).prop_flat_map(|shape| {
        let len = shape.iter().product();
        (Just(shape), data_strategy(len))
    })
}

/// Compares data bit for bit, so NaNs compare equal to themselves.
fn bits(data: &NpyData) -> Vec<u64> {
    match data {
        NpyData::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
        NpyData::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        NpyData::F16(v) => v.iter().map(|&x| u64::from(x)).collect(),
        NpyData::I64(v) => v.iter().map(|&x| x as u64).collect(),
        NpyData::I32(v) => v.iter().map(|&x| u64::from(x as u32)).collect(),
    }
}

/// Header text built from the tokens a .npy header uses, to reach deep into the parser.
fn header_strategy() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        ":",
        ",",
        " ",
        "\n",
        "'descr'",
        "'fortran_order'",
        "'shape'",
        "'<f4'",
        "'<f2'",
        "'<i8'",
        "'<i4'",
        "'>f4'",
        "'|f4'",
        "'<f8'",
        "\"<i4\"",
        "True",
        "False",
        "None",
        "0",
        "1",
        "3",
        "-1",
        "18446744073709551615",
        "99999999999999999999",
        "1000000000000000",
        "'",
        "\"",
        "\\",
        "L",
        "é",
    ]);
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

/// Wraps header text in a valid preamble of format 1.0, 2.0 or 3.0.
fn with_preamble(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = b"\x93NUMPY".to_vec();
    bytes.extend_from_slice(&[version, 0]);
    let len = header.len();
    if version == 1 {
        bytes.extend_from_slice(&(len as u16).to_le_bytes());
    } else {
        bytes.extend_from_slice(&(len as u32).to_le_bytes());
    }
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// (a) Arbitrary bytes, with and without a valid magic string and version in front.
    #[test]
    fn parse_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        version in 0u8..5,
    ) {
        let _ = npy::parse(&bytes);
        let mut prefixed = b"\x93NUMPY".to_vec();
        prefixed.extend_from_slice(&[version, 0]);
        prefixed.extend_from_slice(&bytes);
        let _ = npy::parse(&prefixed);
    }

    /// (a) Token soup headers behind a valid preamble.
    #[test]
    fn parse_never_panics_on_random_headers(
        header in header_strategy(),
        version in 1u8..4,
        data in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let _ = npy::parse(&with_preamble(version, &header, &data));
    }

    /// (b) A valid file with some bytes replaced, then cut at a random point.
    #[test]
    fn parse_never_panics_on_corrupted_files(
        (shape, data) in array_strategy(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = npy::to_bytes(&shape, &data).unwrap();
        for (index, byte) in edits {
            let i = index.index(bytes.len());
            bytes[i] = byte;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(array) = npy::parse(&bytes) {
            // Whatever parses must be self-consistent.
            let elements: usize = array.shape.iter().product();
            prop_assert_eq!(elements, array.data.len());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// (c) Every dtype and shape round-trips bit for bit.
    #[test]
    fn round_trips((shape, data) in array_strategy()) {
        let bytes = npy::to_bytes(&shape, &data).unwrap();
        prop_assert_eq!(bytes.len() % 64, (data.len() * data_size(&data)) % 64);
        let array = npy::parse(&bytes).unwrap();
        prop_assert_eq!(&array.shape, &shape);
        prop_assert_eq!(array.data.dtype(), data.dtype());
        prop_assert_eq!(bits(&array.data), bits(&data));
    }
}

fn data_size(data: &NpyData) -> usize {
    match data {
        NpyData::F32(_) | NpyData::I32(_) => 4,
        NpyData::F16(_) => 2,
        NpyData::F64(_) | NpyData::I64(_) => 8,
    }
}

// Cases per run: parse_never_panics_on_arbitrary_bytes 2000 (each parses 2 inputs),
// parse_never_panics_on_random_headers 2000, parse_never_panics_on_corrupted_files 2000,
// round_trips 500.
