//! Adapters resident for one base model, by name: load, list, unload, and the adapters of a
//! request, under a memory budget.
//!
//! - Each load of a name gets a new **generation**. A request holds the `Arc<Adapter>` it
//!   started with, so reloading or unloading a name never changes a request in flight.
//! - Resident adapters count against a **budget** of bytes; when it is exceeded, the least
//!   recently used ones are evicted (the registry drops its handle; requests that hold one keep
//!   it alive). An evicted adapter is **reloaded on demand** from its file; if the file changed
//!   meanwhile, the reload is a new generation.
//! - The base model is never touched: switching a request's adapters is a lookup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{Adapter, AdapterOptions, Applied};
use crate::error::{EngineError, Result};
use crate::model::Model;

/// What [`Registry::list`] tells of one adapter.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterInfo {
    pub name: String,
    pub path: PathBuf,
    pub generation: u64,
    /// Held by the registry now (else evicted, reloaded on next use).
    pub resident: bool,
    /// Bytes it takes when resident.
    pub bytes: u64,
    pub n_matrices: usize,
}

struct Entry {
    path: PathBuf,
    opts: AdapterOptions,
    generation: u64,
    /// The file's length and modification time when loaded (a changed file is a new version).
    stamp: (u64, Option<SystemTime>),
    loaded: Option<Arc<Adapter>>,
    bytes: u64,
    n_matrices: usize,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    entries: BTreeMap<String, Entry>,
    clock: u64,
    generations: u64,
}

/// Resident adapters of one base model (see the module's documentation).
pub struct Registry<'m> {
    model: &'m Model,
    budget: u64,
    inner: Mutex<Inner>,
}

fn stamp(path: &Path) -> (u64, Option<SystemTime>) {
    match std::fs::metadata(path) {
        Ok(m) => (m.len(), m.modified().ok()),
        Err(_) => (0, None),
    }
}

impl<'m> Registry<'m> {
    /// A registry for adapters of `model`, keeping at most `budget` bytes of them resident.
    pub fn new(model: &'m Model, budget: u64) -> Registry<'m> {
        Registry {
            model,
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave an entry half-written (each update is one
        // insert or field store), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads `path` under `name` (replacing what the name held: requests in flight keep the
    /// old version) and returns its generation.
    pub fn load(&self, name: &str, path: impl AsRef<Path>, opts: &AdapterOptions) -> Result<u64> {
        let path = path.as_ref();
        if name.is_empty() {
            return Err(EngineError::Options(
                "an adapter name cannot be empty".into(),
            ));
        }
        let st = stamp(path);
        let adapter = Arc::new(Adapter::load_with(path, self.model, opts)?);
        let mut inner = self.lock();
        inner.generations += 1;
        inner.clock += 1;
        let generation = inner.generations;
        let entry = Entry {
            path: path.to_path_buf(),
            opts: opts.clone(),
            generation,
            stamp: st,
            bytes: adapter.bytes().len() as u64,
            n_matrices: adapter.n_matrices(),
            loaded: Some(adapter),
            last_used: inner.clock,
        };
        inner.entries.insert(name.to_string(), entry);
        self.evict(&mut inner, name);
        Ok(generation)
    }

    /// Forgets `name` (requests in flight keep their handle).
    pub fn unload(&self, name: &str) -> Result<()> {
        let mut inner = self.lock();
        match inner.entries.remove(name) {
            Some(_) => Ok(()),
            None => Err(unknown(&inner, name)),
        }
    }

    /// Every adapter by name.
    pub fn list(&self) -> Vec<AdapterInfo> {
        self.lock()
            .entries
            .iter()
            .map(|(name, e)| AdapterInfo {
                name: name.clone(),
                path: e.path.clone(),
                generation: e.generation,
                resident: e.loaded.is_some(),
                bytes: e.bytes,
                n_matrices: e.n_matrices,
            })
            .collect()
    }

    /// Bytes of the adapters held now.
    pub fn resident_bytes(&self) -> u64 {
        let inner = self.lock();
        inner
            .entries
            .values()
            .filter(|e| e.loaded.is_some())
            .map(|e| e.bytes)
            .sum()
    }

    /// The adapter `name` for a request (reloaded from its file if it was evicted), and its
    /// generation.
    pub fn get(&self, name: &str) -> Result<(Arc<Adapter>, u64)> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        if !inner.entries.contains_key(name) {
            return Err(unknown(&inner, name));
        }
        let e = inner.entries.get_mut(name).expect("present");
        e.last_used = now;
        if let Some(a) = &e.loaded {
            return Ok((Arc::clone(a), e.generation));
        }
        // Reload outside the lock would let two requests load it twice; adapters are small.
        let adapter = Arc::new(Adapter::load_with(&e.path, self.model, &e.opts)?);
        let st = stamp(&e.path);
        if st != e.stamp {
            inner.generations += 1;
            let g = inner.generations;
            let e = inner.entries.get_mut(name).expect("present");
            (e.generation, e.stamp) = (g, st);
        }
        let e = inner.entries.get_mut(name).expect("present");
        e.bytes = adapter.bytes().len() as u64;
        e.loaded = Some(Arc::clone(&adapter));
        let generation = e.generation;
        self.evict(&mut inner, name);
        Ok((adapter, generation))
    }

    /// The adapters of a request, each at its scale, in order.
    pub fn applied(&self, request: &[(&str, f32)]) -> Result<Vec<Applied>> {
        request
            .iter()
            .map(|&(name, scale)| {
                Ok(Applied {
                    adapter: self.get(name)?.0,
                    scale,
                })
            })
            .collect()
    }

    /// Drops the least recently used resident adapters (never `keep`) while over budget.
    fn evict(&self, inner: &mut Inner, keep: &str) {
        loop {
            let held: u64 = inner
                .entries
                .values()
                .filter(|e| e.loaded.is_some())
                .map(|e| e.bytes)
                .sum();
            if held <= self.budget {
                return;
            }
            let victim = inner
                .entries
                .iter()
                .filter(|(n, e)| e.loaded.is_some() && n.as_str() != keep)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(n, _)| n.clone());
            match victim {
                Some(n) => inner.entries.get_mut(&n).expect("present").loaded = None,
                // Only `keep` is left: one adapter larger than the budget stays usable.
                None => return,
            }
        }
    }
}

fn unknown(inner: &Inner, name: &str) -> EngineError {
    let names: Vec<&str> = inner.entries.keys().map(String::as_str).collect();
    EngineError::Options(format!(
        "no adapter named {name:?} (loaded: {})",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    ))
}
