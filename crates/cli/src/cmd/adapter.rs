//! `hearth adapter`: look into LoRA adapter files, convert PEFT adapters, merge adapters into
//! a base model.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, bail};
use hearth_engine::adapter::binding;
use hearth_gguf::{GgmlType, GgufFile, GgufWriter};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Show an adapter's type, base binding, alpha, ranks and targeted matrices (as JSON with
    /// --json); with -m, also whether it fits that base model.
    Inspect(InspectArgs),
    /// Convert a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) to
    /// llama.cpp's GGUF-LoRA, recording the base model's hash.
    Convert(ConvertArgs),
    /// Merge adapters into a base model's weights (W + s·(alpha/r)·B·A, requantized), writing a
    /// new model for single-purpose deployments.
    Merge(MergeArgs),
}

#[derive(clap::Args)]
pub struct InspectArgs {
    file: PathBuf,
    /// A base model to check the adapter against.
    #[arg(short = 'm', long)]
    model: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Inspect(a) => inspect(a),
        Command::Convert(a) => convert(a),
        Command::Merge(a) => merge(a),
    }
}

fn inspect(a: InspectArgs) -> Result<()> {
    let file = GgufFile::open(&a.file)?;
    let md = file.metadata();
    let kind = md.opt_str("general.type")?.unwrap_or("(none)").to_string();
    let arch = md.architecture()?.to_string();
    let alpha = md.opt_f32("adapter.lora.alpha")?.unwrap_or(0.0);
    let recorded = match binding::read(&file) {
        Ok(binding::Recorded::Nothing) => serde_json::Value::Null,
        Ok(binding::Recorded::Base(h)) => serde_json::Value::String(h),
        Err(e) => anyhow::bail!("{}: {e}", a.file.display()),
    };
    let mut matrices = Vec::new();
    let mut params = 0u64;
    for t in &file.tensors {
        params += t.n_elements;
        if let Some(base) = t.name.strip_suffix(".lora_a") {
            let rank = t.dims.get(1).copied().unwrap_or(0);
            matrices.push(serde_json::json!({"matrix": base, "rank": rank, "type": t.ty.name()}));
        }
    }
    let mut fits = serde_json::Value::Null;
    if let Some(m) = &a.model {
        let path = crate::model_ref::resolve(m)?;
        let model = hearth_engine::Model::load(&path, &Default::default())?;
        fits = match hearth_engine::Adapter::load(&a.file, &model) {
            Ok(ad) => serde_json::json!({"ok": true, "binding": format!("{:?}", ad.binding())}),
            Err(e) => serde_json::json!({"ok": false, "error": e.to_string()}),
        };
    }
    let doc = serde_json::json!({
        "file": a.file.display().to_string(),
        "general.type": kind,
        "adapter.type": md.opt_str("adapter.type")?,
        "architecture": arch,
        "alpha": alpha,
        "base_sha256": recorded,
        "matrices": matrices.len(),
        "parameters": params,
        "bytes": file.bytes().len(),
        "targets": matrices,
        "fits": fits,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{}: {kind} {} for {arch}, alpha {alpha}",
        a.file.display(),
        doc["adapter.type"]
    );
    println!(
        "  base: {}",
        match &doc["base_sha256"] {
            serde_json::Value::String(h) => format!("sha256 {h} (manifest verified)"),
            _ => "not recorded".into(),
        }
    );
    println!(
        "  {} matrices, {params} parameters, {} bytes",
        matrices.len(),
        doc["bytes"]
    );
    for m in &matrices {
        println!(
            "    {} rank {} {}",
            m["matrix"].as_str().unwrap_or(""),
            m["rank"],
            m["type"].as_str().unwrap_or("")
        );
    }
    if !fits.is_null() {
        println!("  fits {}: {}", a.model.as_deref().unwrap_or(""), fits);
    }
    Ok(())
}

/// `hearth adapter convert`: a PEFT adapter to GGUF-LoRA, bound to its base.
#[derive(clap::Args)]
pub struct ConvertArgs {
    /// The PEFT adapter: its directory (adapter_config.json + adapter_model.safetensors).
    peft: PathBuf,
    /// The base model it was trained on (a GGUF file or a known model name).
    #[arg(short = 'm', long)]
    model: String,
    #[arg(short = 'o', long)]
    output: PathBuf,
}

fn convert(a: ConvertArgs) -> Result<()> {
    let Some((config, weights)) = hearth_engine::adapter::peft::files(&a.peft) else {
        anyhow::bail!(
            "{}: not a PEFT adapter (expected a directory with adapter_config.json and \
             adapter_model.safetensors)",
            a.peft.display()
        );
    };
    let path = crate::model_ref::resolve(&a.model)?;
    let base = GgufFile::open(&path)?;
    let mut w = hearth_engine::adapter::peft::convert(&config, &weights, &base)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.peft.display()))?;
    let sha = binding::sha256_file(&path)?;
    binding::stamp(&mut w, &sha).map_err(anyhow::Error::msg)?;
    w.write_to_path(&a.output)?;
    eprintln!(
        "wrote {} ({} matrices, for base {} = sha256 {sha})",
        a.output.display(),
        w.tensors().count() / 2,
        path.display()
    );
    Ok(())
}

/// `hearth adapter merge`: a base model with adapters merged into its weights, for
/// single-purpose deployments.
#[derive(clap::Args)]
pub struct MergeArgs {
    /// The base model (a GGUF file or a known model name).
    #[arg(short = 'm', long)]
    model: String,
    /// An adapter (GGUF-LoRA or PEFT directory) at SCALE (default 1.0); repeatable.
    #[arg(long = "adapter", value_name = "FILE[:SCALE]", required = true)]
    adapters: Vec<String>,
    /// Merge adapters that record another base model (their shapes must still fit).
    #[arg(long)]
    force_adapter: bool,
    /// Type of the merged matrices: keep (each base matrix's own type, requantized), f16 or f32.
    #[arg(long, default_value = "keep")]
    outtype: String,
    #[arg(short = 'o', long)]
    output: PathBuf,
}

/// One adapter's pairs for merging: base tensor name → (A, B) as f32 and the factor.
struct Pairs {
    factor_alpha: f32,
    scale: f32,
    pairs: BTreeMap<String, (Vec<f32>, Vec<f32>, usize)>,
}

fn read_pairs(file: &GgufFile, base: &GgufFile, spec: &str, scale: f32) -> Result<Pairs> {
    let mut halves: BTreeMap<String, [Option<&hearth_gguf::TensorInfo>; 2]> = BTreeMap::new();
    for t in &file.tensors {
        let (name, which) = match (
            t.name.strip_suffix(".lora_a"),
            t.name.strip_suffix(".lora_b"),
        ) {
            (Some(n), _) => (n, 0),
            (_, Some(n)) => (n, 1),
            _ => bail!(
                "{spec}: tensor {:?} is neither a .lora_a nor a .lora_b tensor",
                t.name
            ),
        };
        halves.entry(name.to_string()).or_default()[which] = Some(t);
    }
    let data = |t: &hearth_gguf::TensorInfo| -> Result<Vec<f32>> {
        let start = (file.data_offset + t.offset) as usize;
        let bytes = &file.bytes()[start..start + t.n_bytes as usize];
        let cols = t.dims[0] as usize;
        let rb = hearth_quant::row_bytes(t.ty, cols)?;
        let mut out = vec![0f32; t.n_elements as usize];
        for (src, dst) in bytes.chunks_exact(rb).zip(out.chunks_exact_mut(cols)) {
            hearth_quant::dequantize_row(t.ty, src, dst)?;
        }
        Ok(out)
    };
    let mut pairs = BTreeMap::new();
    for (name, [a, b]) in halves {
        let (Some(a), Some(b)) = (a, b) else {
            bail!("{spec}: {name:?} has only one of .lora_a and .lora_b");
        };
        let w = base
            .tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| anyhow::anyhow!("{spec}: the base model has no {name:?}"))?;
        let (n_in, n_out) = (w.dims[0], *w.dims.get(1).unwrap_or(&1));
        let r = *a.dims.get(1).unwrap_or(&0);
        if a.dims[..] != [n_in, r] || b.dims[..] != [r, n_out] || r == 0 {
            bail!(
                "{spec}: {name:?}: lora_a {:?} and lora_b {:?} do not fit the base matrix {:?}",
                a.dims,
                b.dims,
                w.dims
            );
        }
        pairs.insert(name, (data(a)?, data(b)?, r as usize));
    }
    let alpha = file
        .metadata()
        .opt_f32("adapter.lora.alpha")?
        .unwrap_or(0.0);
    Ok(Pairs {
        factor_alpha: alpha,
        scale,
        pairs,
    })
}

fn merge(a: MergeArgs) -> Result<()> {
    let path = crate::model_ref::resolve(&a.model)?;
    let base = GgufFile::open(&path)?;
    let base_sha = binding::sha256_file(&path)?;
    let mut adapters = Vec::new();
    let mut record = Vec::new();
    for spec in &a.adapters {
        let (file_path, scale) = match spec.rsplit_once(':') {
            Some((f, s)) if s.parse::<f32>().is_ok() => (f, s.parse::<f32>()?),
            _ => (spec.as_str(), 1.0),
        };
        if !scale.is_finite() {
            bail!("--adapter {spec}: the scale must be a finite number");
        }
        let file = match hearth_engine::adapter::peft::files(std::path::Path::new(file_path)) {
            Some((config, weights)) => {
                let w = hearth_engine::adapter::peft::convert(&config, &weights, &base)
                    .map_err(|e| anyhow::anyhow!("--adapter {spec}: {e}"))?;
                let mut bytes = Vec::new();
                w.write(&mut bytes)?;
                GgufFile::from_bytes(bytes)?
            }
            None => GgufFile::open(file_path)?,
        };
        let md = file.metadata();
        if md.opt_str("general.type")? != Some("adapter") {
            bail!("--adapter {spec}: not an adapter (general.type is not \"adapter\")");
        }
        if md.architecture()? != base.metadata().architecture()? {
            bail!(
                "--adapter {spec}: the adapter is for a {} model, the base model is {}",
                md.architecture()?,
                base.metadata().architecture()?
            );
        }
        match binding::read(&file).map_err(|e| anyhow::anyhow!("--adapter {spec}: {e}"))? {
            binding::Recorded::Base(h) if h != base_sha && !a.force_adapter => bail!(
                "--adapter {spec}: the adapter was made for another base model (SHA-256 {h}); \
                 the base's is {base_sha} (--force-adapter merges it anyway)"
            ),
            binding::Recorded::Nothing => eprintln!(
                "warning: adapter {file_path} records no base model; only its shapes were checked"
            ),
            _ => {}
        }
        record.push(format!("{}:{scale}", binding::sha256(file.bytes())));
        adapters.push(read_pairs(&file, &base, spec, scale)?);
    }
    let outtype = match a.outtype.to_ascii_lowercase().as_str() {
        "keep" => None,
        "f16" => Some(GgmlType::F16),
        "f32" => Some(GgmlType::F32),
        other => bail!("--outtype {other}: expected keep, f16 or f32"),
    };
    let mut w = GgufWriter::new();
    for (k, v) in base.metadata().iter() {
        w.set(k, v.clone());
    }
    w.set("hearth.merge.base_sha256", base_sha.clone());
    w.set("hearth.merge.adapters", record.join(","));
    let mut merged = 0;
    for t in &base.tensors {
        let start = (base.data_offset + t.offset) as usize;
        let bytes = &base.bytes()[start..start + t.n_bytes as usize];
        let updates: Vec<_> = adapters
            .iter()
            .filter_map(|p| p.pairs.get(&t.name).map(|ab| (p, ab)))
            .collect();
        if updates.is_empty() {
            w.add_tensor(t.name.clone(), &t.dims, t.ty, bytes)?;
            continue;
        }
        let (n_in, n_out) = (t.dims[0] as usize, t.dims[1] as usize);
        let rb = hearth_quant::row_bytes(t.ty, n_in)?;
        let mut wf = vec![0f32; n_in * n_out];
        for (src, dst) in bytes.chunks_exact(rb).zip(wf.chunks_exact_mut(n_in)) {
            hearth_quant::dequantize_row(t.ty, src, dst)?;
        }
        // W += s·(alpha/r)·B·A, B (n_out × r), A (r × n_in), as llama.cpp scales an update.
        for (p, (am, bm, r)) in updates {
            let f = if p.factor_alpha == 0.0 {
                p.scale
            } else {
                p.scale * p.factor_alpha / *r as f32
            };
            for (o, row) in wf.chunks_exact_mut(n_in).enumerate() {
                for k in 0..*r {
                    let c = f * bm[o * r + k];
                    for (x, &av) in row.iter_mut().zip(&am[k * n_in..(k + 1) * n_in]) {
                        *x += c * av;
                    }
                }
            }
        }
        let ty = outtype.unwrap_or(t.ty);
        let q = hearth_quant::quantize_matrix(ty, &wf, n_out, n_in)
            .map_err(|e| anyhow::anyhow!("requantizing {} to {ty}: {e}", t.name))?;
        w.add_tensor(t.name.clone(), &t.dims, ty, q)?;
        merged += 1;
    }
    w.write_to_path(&a.output)?;
    eprintln!(
        "wrote {} ({merged} matrices merged from {} adapter(s) into base sha256 {base_sha})",
        a.output.display(),
        adapters.len()
    );
    Ok(())
}
