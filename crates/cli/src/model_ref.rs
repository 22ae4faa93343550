//! Turning a MODEL argument (a path, or the name of a known model) into a file path.

use std::path::PathBuf;

use anyhow::{Result, bail};

/// Models hearth knows by name, and the file `scripts/fetch-model` puts in the cache for each.
const KNOWN: &[(&str, &str)] = &[("gemma3-270m", "gemma-3-270m-q4_k_m.gguf")];

/// `$HEARTH_HOME`, or `~/.cache/hearth`.
pub fn hearth_home() -> PathBuf {
    if let Some(h) = std::env::var_os("HEARTH_HOME") {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("hearth")
}

pub fn resolve(model: &str) -> Result<PathBuf> {
    if let Some((name, file)) = KNOWN.iter().find(|(n, _)| *n == model) {
        let path = hearth_home().join("models").join(file);
        if !path.is_file() {
            bail!(
                "model {name} is not in the cache ({}); fetch it with scripts/fetch-model",
                path.display()
            );
        }
        return Ok(path);
    }
    let path = PathBuf::from(model);
    if !path.exists() {
        let names: Vec<_> = KNOWN.iter().map(|(n, _)| *n).collect();
        bail!(
            "{model}: no such file (known model names: {})",
            names.join(", ")
        );
    }
    Ok(path)
}
