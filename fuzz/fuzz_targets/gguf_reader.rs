//! Feeds arbitrary bytes to the GGUF reader: it must return a header or an error, never panic,
//! hang or allocate more than the input's size suggests. Accepted files are walked fully
//! (every value rendered, every tensor's bytes touched) and re-written, then re-read.
#![no_main]

use hearth_gguf::{GgufFile, GgufWriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else { return };
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata().iter() {
        let _ = v.to_string();
        w.set(k, v.clone());
    }
    for t in &f.tensors {
        let bytes = f.tensor_data(t);
        assert_eq!(bytes.len() as u64, t.n_bytes);
        w.add_tensor(t.name.clone(), &t.dims, t.ty, bytes).ok();
    }
    let mut out = Vec::new();
    if w.write(&mut out).is_ok() {
        let again = GgufFile::from_bytes(out).expect("a file we wrote must read back");
        assert_eq!(again.metadata().len(), f.metadata().len());
    }
});
