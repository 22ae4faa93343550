//! Binding an adapter to the base model it was made for.
//!
//! Every adapter hearth writes (`synth-adapter`, `adapter convert`, `adapter merge`) records
//! the SHA-256 of the base model's file ([`BASE_SHA256`]) and a manifest ([`MANIFEST`]): a
//! canonical JSON document (keys sorted, no spaces) naming the format, the base, alpha and every
//! tensor with its type, shape and SHA-256. The manifest's bytes are what a signature would
//! cover; loading checks the tensors against it (a corrupt or edited file fails) and the base
//! against the loaded model. Files without these keys — llama.cpp's — load with a warning.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use hearth_gguf::{GgufFile, GgufWriter, TensorInfo};
use sha2::{Digest, Sha256};

/// Metadata key: hex SHA-256 of the base model's file.
pub const BASE_SHA256: &str = "adapter.hearth.base_sha256";
/// Metadata key: the manifest (canonical JSON).
pub const MANIFEST: &str = "adapter.hearth.manifest";
/// The manifest's `format`.
pub const MANIFEST_FORMAT: &str = "hearth-adapter-manifest/1";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of a byte string.
pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Hex SHA-256 of a file's contents, read in pieces (not mapped, so the pages stay out of
/// this process's resident memory).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The manifest of an adapter: canonical JSON of its format, architecture, base, alpha and
/// tensors (name → type, ggml dims, SHA-256 of the data).
pub fn manifest<'a>(
    arch: &str,
    base_sha256: &str,
    alpha: f32,
    tensors: impl Iterator<Item = (&'a TensorInfo, &'a [u8])>,
) -> String {
    let tensors: BTreeMap<&str, serde_json::Value> = tensors
        .map(|(info, data)| {
            let entry = serde_json::json!({
                "dims": info.dims,
                "sha256": sha256(data),
                "type": info.ty.name(),
            });
            (info.name.as_str(), entry)
        })
        .collect();
    let doc = serde_json::json!({
        "alpha": alpha,
        "architecture": arch,
        "base_sha256": base_sha256,
        "format": MANIFEST_FORMAT,
        "tensors": tensors,
        "type": "lora",
    });
    canonical(&doc)
}

/// JSON with object keys sorted and no whitespace.
fn canonical(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let sorted: BTreeMap<&String, &serde_json::Value> = m.iter().collect();
            let body: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| format!("{}:{}", serde_json::Value::from(k.as_str()), canonical(v)))
                .collect();
            format!("{{{}}}", body.join(","))
        }
        serde_json::Value::Array(a) => {
            format!(
                "[{}]",
                a.iter().map(canonical).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

/// Records the base's hash and the manifest of the tensors added so far in an adapter being
/// written (`general.architecture` and `adapter.lora.alpha` must be set already).
pub fn stamp(w: &mut GgufWriter, base_sha256: &str) -> Result<(), String> {
    let arch = match w.metadata.get("general.architecture") {
        Some(hearth_gguf::Value::String(s)) => s.clone(),
        _ => return Err("the adapter has no general.architecture".into()),
    };
    let alpha = match w.metadata.get("adapter.lora.alpha") {
        Some(hearth_gguf::Value::F32(a)) => *a,
        _ => 0.0,
    };
    let m = manifest(&arch, base_sha256, alpha, w.tensors());
    w.set(BASE_SHA256, base_sha256.to_string());
    w.set(MANIFEST, m);
    Ok(())
}

/// What an adapter file says about its base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// No hash (llama.cpp's files).
    Nothing,
    /// The base's SHA-256, with the manifest checked against the file's tensors.
    Base(String),
}

/// Reads and checks an adapter file's binding: the manifest must match the file's tensors,
/// format, architecture and alpha, and name the same base as [`BASE_SHA256`].
pub fn read(file: &GgufFile) -> Result<Recorded, String> {
    let md = file.metadata();
    let base = md.opt_str(BASE_SHA256).map_err(|e| e.to_string())?;
    let stored = md.opt_str(MANIFEST).map_err(|e| e.to_string())?;
    let (base, stored) = match (base, stored) {
        (None, None) => return Ok(Recorded::Nothing),
        (Some(b), Some(m)) => (b, m),
        _ => return Err(format!("{BASE_SHA256} and {MANIFEST} must both be present")),
    };
    let arch = md.architecture().map_err(|e| e.to_string())?;
    let alpha = md
        .opt_f32("adapter.lora.alpha")
        .map_err(|e| e.to_string())?
        .unwrap_or(0.0);
    let bytes = file.bytes();
    let tensors = file.tensors.iter().map(|t| {
        let start = (file.data_offset + t.offset) as usize;
        (t, &bytes[start..start + t.n_bytes as usize])
    });
    let want = manifest(arch, base, alpha, tensors);
    if want != stored {
        return Err(
            "the adapter's tensors or metadata do not match its manifest (a corrupt or edited file)"
                .into(),
        );
    }
    Ok(Recorded::Base(base.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_drops_spaces() {
        let v = serde_json::json!({"b": [1, {"d": 2, "c": "x y"}], "a": 1.5});
        assert_eq!(canonical(&v), r#"{"a":1.5,"b":[1,{"c":"x y","d":2}]}"#);
        assert_eq!(
            sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
