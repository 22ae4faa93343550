use super::*;

fn sample_writer() -> GgufWriter<'static> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama")
        .set("u8", 7u8)
        .set("i8", -7i8)
        .set("u16", 700u16)
        .set("i16", -700i16)
        .set("u32", 70_000u32)
        .set("i32", -70_000i32)
        .set("f32", 1.5f32)
        .set("bool", true)
        .set("string", "héllo")
        .set("u64", u64::MAX)
        .set("i64", i64::MIN)
        .set("f64", -2.25f64)
        .set(
            "arr.str",
            vec!["a".to_string(), String::new(), "▁c".to_string()],
        )
        .set("arr.f32", vec![0.5f32, -1.0])
        .set("arr.bool", vec![true, false])
        .set(
            "arr.nested",
            Array::Array(vec![
                Array::I32(vec![1, 2]),
                Array::String(vec!["x".into()]),
                Array::U8(vec![]),
            ]),
        )
        .set("llama.context_length", 2048u32);
    w.add_tensor("a", &[64, 2], GgmlType::F32, vec![1u8; 512])
        .unwrap();
    w.add_tensor("b", &[32], GgmlType::Q8_0, vec![2u8; 34])
        .unwrap();
    w.add_tensor("c", &[256, 1, 1, 1], GgmlType::Q4K, vec![3u8; 144])
        .unwrap();
    w
}

fn bytes_of(w: &GgufWriter) -> Vec<u8> {
    let mut out = Vec::new();
    w.write(&mut out).unwrap();
    out
}

#[test]
fn round_trip_every_value_type_and_tensor() {
    let w = sample_writer();
    let f = GgufFile::from_bytes(bytes_of(&w)).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.metadata().len(), w.metadata.len());
    for (k, v) in w.metadata.iter() {
        assert_eq!(f.metadata().get(k), Some(v), "key {k}");
    }
    let m = f.metadata();
    assert_eq!(m.architecture().unwrap(), "llama");
    assert_eq!(m.arch_u64("context_length").unwrap(), 2048);
    assert_eq!(m.u64("u16").unwrap(), 700);
    assert!(matches!(m.u64("i32"), Err(GgufError::WrongType { .. })));
    assert!(matches!(m.u64("nope"), Err(GgufError::MissingKey(_))));
    assert_eq!(m.strings("arr.str").unwrap()[2], "▁c");
    assert_eq!(f.tensors.len(), 3);
    assert_eq!(f.tensor_data(f.tensor("a").unwrap()), &[1u8; 512][..]);
    assert_eq!(f.tensor_data(f.tensor("b").unwrap()), &[2u8; 34][..]);
    let c = f.require_tensor("c").unwrap();
    assert_eq!(
        (c.ty, c.n_elements, c.n_bytes, c.n_rows()),
        (GgmlType::Q4K, 256, 144, 1)
    );
    for t in &f.tensors {
        assert_eq!((f.data_offset + t.offset) % 32, 0);
    }
    assert!(matches!(
        f.require_tensor("zz"),
        Err(GgufError::MissingTensor(_))
    ));
}

#[test]
fn custom_alignment_is_honoured() {
    let mut w = sample_writer();
    w.set(keys::ALIGNMENT, 64u32);
    let f = GgufFile::from_bytes(bytes_of(&w)).unwrap();
    assert_eq!(f.alignment, 64);
    for t in &f.tensors {
        assert_eq!((f.data_offset + t.offset) % 64, 0);
    }
    w.set(keys::ALIGNMENT, 48u32);
    let mut out = Vec::new();
    assert!(w.write(&mut out).is_err());
}

#[test]
fn version_2_is_read() {
    let mut b = bytes_of(&sample_writer());
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(GgufFile::from_bytes(b).unwrap().version, 2);
}

#[test]
fn writer_rejects_wrong_sizes_and_names() {
    let mut w = GgufWriter::new();
    assert!(
        w.add_tensor("x", &[32], GgmlType::Q8_0, vec![0u8; 33])
            .is_err()
    );
    assert!(
        w.add_tensor("x", &[33], GgmlType::Q8_0, vec![0u8; 34])
            .is_err()
    );
    assert!(
        w.add_tensor("n".repeat(64), &[1], GgmlType::F32, vec![0u8; 4])
            .is_err()
    );
    w.add_tensor("x", &[1], GgmlType::F32, vec![0u8; 4])
        .unwrap();
    assert!(
        w.add_tensor("x", &[1], GgmlType::F32, vec![0u8; 4])
            .is_err()
    );
}

#[test]
fn write_to_path_is_atomic_and_readable() {
    let dir = std::env::temp_dir().join(format!("hearth-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("m.gguf");
    sample_writer().write_to_path(&p).unwrap();
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.tensors.len(), 3);
    assert_eq!(f.path(), Some(p.as_path()));
    assert!(
        std::fs::read_dir(&dir).unwrap().count() == 1,
        "temporary file left behind"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Finds `needle` in `hay` (for patching specific header fields).
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

fn err(b: Vec<u8>) -> GgufError {
    match GgufFile::from_bytes(b) {
        Ok(_) => panic!("malformed file accepted"),
        Err(e) => e,
    }
}

#[test]
fn malformed_files_get_named_errors() {
    let good = bytes_of(&sample_writer());

    // Every truncation point that loses header or tensor bytes fails cleanly (trailing padding may go).
    let f = GgufFile::from_bytes(good.clone()).unwrap();
    let c = f.tensor("c").unwrap();
    let end = (f.data_offset + c.offset + c.n_bytes) as usize;
    assert!(GgufFile::from_bytes(good[..end].to_vec()).is_ok());
    for cut in 0..end {
        let e = err(good[..cut].to_vec());
        let msg = e.to_string();
        assert!(!msg.is_empty());
    }
    assert!(matches!(
        err(good[..10].to_vec()),
        GgufError::TooShort { .. }
    ));

    let mut b = good.clone();
    b[0] = b'X';
    assert!(matches!(err(b), GgufError::BadMagic { .. }));

    let mut b = good.clone();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(err(b), GgufError::UnsupportedVersion(1)));
    let mut b = good.clone();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(matches!(err(b), GgufError::BigEndian));

    // Absurd counts: tensor count and kv count.
    let mut b = good.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(err(b), GgufError::AbsurdCount { .. }));
    let mut b = good.clone();
    b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(err(b), GgufError::AbsurdCount { .. }));

    // Absurd string length: the first key's length.
    let mut b = good.clone();
    b[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    assert!(matches!(err(b), GgufError::Truncated { .. }));

    // Unknown value type: patch the type of key "u8".
    let mut b = good.clone();
    let at = find(&b, b"\x02\0\0\0\0\0\0\0u8") + 10;
    b[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    assert!(matches!(err(b), GgufError::UnknownValueType { id: 99, .. }));

    // Invalid UTF-8 in a key.
    let mut b = good.clone();
    let at = find(&b, b"string");
    b[at] = 0xff;
    assert!(matches!(err(b), GgufError::BadUtf8 { .. }));

    // Unknown tensor type: patch tensor "b"'s type (Q8_0 = 8).
    let mut b = good.clone();
    let at = find(&b, b"\x01\0\0\0\0\0\0\0b\x01\0\0\0") + 13 + 8;
    assert_eq!(&b[at..at + 4], &8u32.to_le_bytes());
    b[at..at + 4].copy_from_slice(&4u32.to_le_bytes());
    assert!(matches!(err(b), GgufError::UnknownTensorType { id: 4, .. }));

    // Out-of-bounds data: tensor "c"'s offset pushed past the end.
    let mut b = good.clone();
    let at = find(&b, b"\x01\0\0\0\0\0\0\0c\x04\0\0\0") + 13 + 32 + 4;
    b[at..at + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    assert!(matches!(err(b), GgufError::BadTensor { .. }));

    // Overlap: tensor "c" moved onto tensor "a".
    let mut b = good.clone();
    b[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    assert!(matches!(err(b), GgufError::Overlap { .. }));

    // Misaligned offset.
    let mut b = good.clone();
    b[at..at + 8].copy_from_slice(&600u64.to_le_bytes());
    assert!(matches!(err(b), GgufError::BadTensor { .. }));

    // Size overflow: tensor "c"'s dims made huge.
    let mut b = good.clone();
    let dims = find(&b, b"\x01\0\0\0\0\0\0\0c\x04\0\0\0") + 13;
    for d in 0..4 {
        b[dims + 8 * d..dims + 8 * d + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    }
    assert!(matches!(err(b), GgufError::BadTensor { .. }));

    // Too many dimensions.
    let mut b = good.clone();
    b[dims - 4..dims].copy_from_slice(&5u32.to_le_bytes());
    assert!(matches!(err(b), GgufError::BadTensor { .. }));

    // Duplicate key and duplicate tensor.
    let mut b = good.clone();
    let at = find(&b, b"i16");
    b[at..at + 3].copy_from_slice(b"u16");
    assert!(matches!(err(b), GgufError::DuplicateKey(_)));
    let mut b = good.clone();
    let at = find(&b, b"\x01\0\0\0\0\0\0\0b\x01\0\0\0") + 8;
    b[at] = b'a';
    assert!(matches!(err(b), GgufError::DuplicateTensor(_)));

    // Bad alignment value.
    let mut w = sample_writer();
    w.set(keys::ALIGNMENT, 64u32);
    let mut b = bytes_of(&w);
    let at = find(&b, b"general.alignment") + 17 + 4;
    b[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(err(b), GgufError::BadValue { .. }));
}

#[test]
fn deeply_nested_arrays_are_refused() {
    let mut a = Array::I32(vec![1]);
    for _ in 0..MAX_ARRAY_DEPTH {
        a = Array::Array(vec![a]);
    }
    let mut w = GgufWriter::new();
    w.set("deep", a);
    let e = err(bytes_of(&w));
    assert!(matches!(e, GgufError::TooDeep { .. }), "{e}");
}

#[test]
fn open_names_the_file_in_errors() {
    let dir = std::env::temp_dir().join(format!("hearth-gguf-err-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.gguf");
    std::fs::write(&p, b"not a gguf file at all, clearly").unwrap();
    let msg = GgufFile::open(&p).err().unwrap().to_string();
    assert!(
        msg.contains("bad.gguf") && msg.contains("not a GGUF file"),
        "{msg}"
    );
    let msg = GgufFile::open(dir.join("missing.gguf"))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("missing.gguf"), "{msg}");
    std::fs::write(&p, b"").unwrap();
    assert!(matches!(
        GgufFile::open(&p).err().unwrap().kind(),
        GgufError::TooShort { len: 0 }
    ));
    let msg = GgufFile::open(&dir).err().unwrap().to_string();
    assert!(msg.contains("directory"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Inputs the fuzzer found (fuzz/), kept as regressions.
#[test]
fn fuzz_regressions() {
    // A zero-byte tensor in a file that ends before its (aligned) data section.
    let b: Vec<u8> = vec![
        71, 71, 85, 70, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 250, 0,
        0, 0, 0,
    ];
    let f = GgufFile::from_bytes(b);
    assert!(
        matches!(f, Err(GgufError::BadTensor { .. })),
        "{:?}",
        f.err()
    );
}
