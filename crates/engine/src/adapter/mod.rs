//! LoRA adapters in llama.cpp's GGUF-LoRA format (or PEFT's, converted on load: [`peft`]),
//! applied beside the base weights, and bound to the base they were made for ([`binding`]).
//!
//! An adapter holds, for some of the base model's matrices W (`n_out × n_in`), two small
//! matrices A (`r × n_in`, tensor `<W>.lora_a`) and B (`n_out × r`, `<W>.lora_b`). With an
//! adapter at scale s, a product becomes `y = W·x + s·(alpha/r)·B·(A·x)` — the same operations
//! llama.cpp's `build_lora_mm` does. The base weights are never rewritten, so sessions with
//! different adapters (or none) share one loaded model.

pub mod binding;
pub mod peft;
pub mod registry;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hearth_gguf::{GgmlType, GgufFile};

use crate::error::{EngineError, Result};
use crate::model::{Matrix, Model};

/// The base matrices of a layer an adapter can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    AttnQ,
    AttnK,
    AttnV,
    AttnOutput,
    FfnGate,
    FfnUp,
    FfnDown,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::AttnQ,
        Target::AttnK,
        Target::AttnV,
        Target::AttnOutput,
        Target::FfnGate,
        Target::FfnUp,
        Target::FfnDown,
    ];

    /// The GGUF tensor name's middle part (`blk.N.<name>.weight`).
    pub fn name(self) -> &'static str {
        match self {
            Target::AttnQ => "attn_q",
            Target::AttnK => "attn_k",
            Target::AttnV => "attn_v",
            Target::AttnOutput => "attn_output",
            Target::FfnGate => "ffn_gate",
            Target::FfnUp => "ffn_up",
            Target::FfnDown => "ffn_down",
        }
    }

    fn from_name(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// Where an adapted matrix sits in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Site {
    Layer(usize, Target),
    /// The output head (`output.weight`).
    Output,
}

/// A and B of one adapted matrix.
pub(crate) struct Lora {
    pub a: Matrix,
    pub b: Matrix,
    pub rank: usize,
}

/// A LoRA adapter read from a GGUF-LoRA file (memory-mapped), checked against one base model.
pub struct Adapter {
    path: PathBuf,
    alpha: f32,
    file: GgufFile,
    weights: HashMap<Site, Lora>,
    n_params: u64,
    /// [`Model::id`] of the model it was checked against.
    base: u64,
    binding: Binding,
}

/// How an adapter was matched to its base model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// The file records the base's SHA-256 and it is the loaded model's.
    Verified,
    /// The file records no base (llama.cpp's files): only the architecture and shapes were
    /// checked.
    Unrecorded,
    /// The file records another base, and loading was forced.
    Forced { recorded: String },
}

/// How to load an adapter.
#[derive(Clone, Debug, Default)]
pub struct AdapterOptions {
    /// Load an adapter made for another base model (its shapes must still fit).
    pub force: bool,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("path", &self.path)
            .field("alpha", &self.alpha)
            .field("matrices", &self.weights.len())
            .finish()
    }
}

impl Adapter {
    /// Opens a GGUF-LoRA file and checks it against `model`: its architecture, the base it
    /// records (see [`binding`]), and for every pair of tensors, that it names a matrix the
    /// model has and that the shapes fit it.
    pub fn load(path: impl AsRef<Path>, model: &Model) -> Result<Adapter> {
        Adapter::load_with(path, model, &AdapterOptions::default())
    }

    /// [`Adapter::load`] with options.
    pub fn load_with(
        path: impl AsRef<Path>,
        model: &Model,
        opts: &AdapterOptions,
    ) -> Result<Adapter> {
        let path = path.as_ref();
        let err = |problem: String| EngineError::model(path, problem);
        let file = open(path, model.gguf())?;
        let md = file.metadata();
        let kind = md.opt_str("general.type").map_err(|e| err(e.to_string()))?;
        if kind != Some("adapter") {
            return Err(err(format!(
                "not an adapter: general.type is {kind:?}, expected \"adapter\" (is this a base model?)"
            )));
        }
        let ty = md.opt_str("adapter.type").map_err(|e| err(e.to_string()))?;
        if ty != Some("lora") {
            return Err(err(format!(
                "adapter.type is {ty:?}; hearth applies \"lora\" adapters"
            )));
        }
        let arch = md.architecture().map_err(|e| err(e.to_string()))?;
        let base_arch = model.architecture().name();
        if arch != base_arch {
            return Err(err(format!(
                "the adapter is for a {arch} model, the base model is {base_arch}"
            )));
        }
        let binding = match binding::read(&file).map_err(err)? {
            binding::Recorded::Nothing => Binding::Unrecorded,
            binding::Recorded::Base(recorded) => {
                let have = model.content_sha256()?;
                if recorded == have {
                    Binding::Verified
                } else if opts.force {
                    Binding::Forced { recorded }
                } else {
                    return Err(err(format!(
                        "the adapter was made for another base model (SHA-256 {recorded}); the \
                         loaded model's is {have} (--force-adapter loads it anyway)"
                    )));
                }
            }
        };
        let alpha = md
            .opt_f32("adapter.lora.alpha")
            .map_err(|e| err(e.to_string()))?
            .unwrap_or(0.0);
        if !alpha.is_finite() {
            return Err(err(format!("adapter.lora.alpha is {alpha}")));
        }

        // Pair up `<W>.lora_a` and `<W>.lora_b`.
        let mut pairs: HashMap<&str, [Option<&hearth_gguf::TensorInfo>; 2]> = HashMap::new();
        for t in &file.tensors {
            let (base, which) = if let Some(b) = t.name.strip_suffix(".lora_a") {
                (b, 0)
            } else if let Some(b) = t.name.strip_suffix(".lora_b") {
                (b, 1)
            } else {
                return Err(err(format!(
                    "tensor {:?} is neither a .lora_a nor a .lora_b tensor",
                    t.name
                )));
            };
            pairs.entry(base).or_default()[which] = Some(t);
        }
        let mut weights = HashMap::new();
        let mut n_params = 0;
        for (base, [a, b]) in pairs {
            let (Some(a), Some(b)) = (a, b) else {
                return Err(err(format!("{base:?} has only one of .lora_a and .lora_b")));
            };
            let site = parse_site(base).ok_or_else(|| {
                err(format!(
                    "{base:?} is not a matrix hearth can adapt (targets: {} of any layer, and \
                     output.weight)",
                    Target::ALL.map(|t| t.name()).join(", ")
                ))
            })?;
            let w = model
                .site(site)
                .ok_or_else(|| err(format!("{base:?}: the base model has no such matrix")))?;
            // ggml shapes: A {n_in, r}, B {r, n_out}.
            let dims = |t: &hearth_gguf::TensorInfo| -> Option<(usize, usize)> {
                match t.dims[..] {
                    [c, r] => Some((c as usize, r as usize)),
                    [c, r, 1] | [c, r, 1, 1] => Some((c as usize, r as usize)),
                    _ => None,
                }
            };
            let shape_err = || {
                err(format!(
                    "{base:?}: lora_a {:?} and lora_b {:?} do not fit the base matrix \
                     ({} inputs, {} outputs): expected [{}, r] and [r, {}]",
                    a.dims, b.dims, w.cols, w.rows, w.cols, w.rows
                ))
            };
            let ((a_cols, rank), (b_cols, b_rows)) = (
                dims(a).ok_or_else(shape_err)?,
                dims(b).ok_or_else(shape_err)?,
            );
            if a_cols != w.cols || b_rows != w.rows || b_cols != rank || rank == 0 {
                return Err(shape_err());
            }
            for t in [a, b] {
                if !matches!(
                    t.ty,
                    GgmlType::F16 | GgmlType::F32 | GgmlType::BF16 | GgmlType::Q8_0
                ) {
                    return Err(err(format!(
                        "{:?} is {}; hearth applies F32, F16, BF16 and Q8_0 LoRA tensors",
                        t.name, t.ty
                    )));
                }
            }
            let start = |t: &hearth_gguf::TensorInfo| (file.data_offset + t.offset) as usize;
            let lora = Lora {
                a: Matrix::in_file(a.ty, rank, a_cols, start(a), a.n_bytes as usize),
                b: Matrix::in_file(b.ty, b_rows, rank, start(b), b.n_bytes as usize),
                rank,
            };
            n_params += a.n_elements + b.n_elements;
            weights.insert(site, lora);
        }
        if weights.is_empty() {
            return Err(err("the adapter has no LoRA tensors".into()));
        }
        Ok(Adapter {
            path: path.to_path_buf(),
            alpha,
            file,
            weights,
            n_params,
            base: model.id(),
            binding,
        })
    }

    /// Whether this adapter was checked against `model` (the same loaded model).
    pub fn fits(&self, model: &Model) -> bool {
        self.base == model.id()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How it was matched to its base.
    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    pub fn alpha(&self) -> f32 {
        self.alpha
    }

    /// Number of adapted matrices.
    pub fn n_matrices(&self) -> usize {
        self.weights.len()
    }

    /// Parameters in all A and B matrices.
    pub fn n_params(&self) -> u64 {
        self.n_params
    }

    pub(crate) fn get(&self, site: Site) -> Option<&Lora> {
        self.weights.get(&site)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.file.bytes()
    }

    /// Hex SHA-256 of the adapter's bytes (as converted, for a PEFT adapter).
    pub fn content_sha256(&self) -> String {
        binding::sha256(self.bytes())
    }

    /// A and B of the matrix at `site` in f32; `None` when the adapter leaves it alone.
    pub fn dense(&self, site: Site) -> Result<Option<DenseLora>> {
        let Some(l) = self.get(site) else {
            return Ok(None);
        };
        let rows = |m: &Matrix| -> Result<Vec<f32>> {
            let v = m.view(self.bytes());
            let mut out = vec![0f32; v.rows * v.cols];
            let rb = v.row_bytes();
            for (src, dst) in v.data.chunks_exact(rb).zip(out.chunks_exact_mut(v.cols)) {
                hearth_quant::dequantize_row(v.ty, src, dst)?;
            }
            Ok(out)
        };
        Ok(Some(DenseLora {
            a: rows(&l.a)?,
            b: rows(&l.b)?,
            rank: l.rank,
        }))
    }

    /// The factor B·A·x is multiplied by at user scale `scale`: llama.cpp's
    /// `scale · alpha / rank`, or `scale` when the file gives no alpha.
    pub fn factor(&self, scale: f32, rank: usize) -> f32 {
        if self.alpha == 0.0 {
            scale
        } else {
            scale * self.alpha / rank as f32
        }
    }
}

/// An adapter file: GGUF-LoRA, or a PEFT adapter (its directory or one of its files)
/// converted in memory for `base`.
fn open(path: &Path, base: &GgufFile) -> Result<GgufFile> {
    Ok(match peft::files(path) {
        Some((config, weights)) => {
            let w = peft::convert(&config, &weights, base)
                .map_err(|problem| EngineError::model(path, problem))?;
            let mut bytes = Vec::new();
            w.write(&mut bytes)?;
            GgufFile::from_bytes(bytes)?
        }
        None => GgufFile::open(path)?,
    })
}

/// One adapted matrix's A (`rank × n_in`) and B (`n_out × rank`), row-major f32.
pub struct DenseLora {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub rank: usize,
}

/// An adapter applied at a scale.
#[derive(Clone, Debug)]
pub struct Applied {
    pub adapter: Arc<Adapter>,
    pub scale: f32,
}

impl PartialEq for Applied {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.adapter, &other.adapter) && self.scale.to_bits() == other.scale.to_bits()
    }
}

/// The site of a base tensor's GGUF name (`blk.N.attn_q.weight`, `output.weight`), if an
/// adapter can target it.
pub fn parse_site(name: &str) -> Option<Site> {
    if name == "output.weight" {
        return Some(Site::Output);
    }
    let rest = name.strip_prefix("blk.")?.strip_suffix(".weight")?;
    let (il, target) = rest.split_once('.')?;
    Some(Site::Layer(il.parse().ok()?, Target::from_name(target)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_names_map_to_sites() {
        assert_eq!(
            parse_site("blk.12.ffn_down.weight"),
            Some(Site::Layer(12, Target::FfnDown))
        );
        assert_eq!(parse_site("output.weight"), Some(Site::Output));
        for bad in [
            "blk.x.attn_q.weight",
            "blk.0.attn_norm.weight",
            "token_embd.weight",
            "blk.0.attn_q",
        ] {
            assert_eq!(parse_site(bad), None, "{bad}");
        }
    }
}
