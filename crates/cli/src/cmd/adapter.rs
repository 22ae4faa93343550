//! `hearth adapter`: look into LoRA adapter files, convert PEFT adapters, merge adapters into
//! a base model.

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

fn merge(a: MergeArgs) -> Result<()> {
    let outtype = match a.outtype.to_ascii_lowercase().as_str() {
        "keep" => None,
        "f16" => Some(GgmlType::F16),
        "f32" => Some(GgmlType::F32),
        other => bail!("--outtype {other}: expected keep, f16 or f32"),
    };
    let path = crate::model_ref::resolve(&a.model)?;
    // The base's tensors are read as they are in the file: no repacking.
    let opts = hearth_engine::LoadOptions {
        repack: false,
        ..Default::default()
    };
    let model = hearth_engine::Model::load(&path, &opts)?;
    let adapters = super::common::load_adapters(&a.adapters, &model, a.force_adapter)?;
    let base_sha = model.content_sha256()?.to_string();
    let base = model.gguf();
    let mut w = GgufWriter::new();
    for (k, v) in base.metadata().iter() {
        w.set(k, v.clone());
    }
    let record: Vec<String> = adapters
        .iter()
        .map(|ap| format!("{}:{}", ap.adapter.content_sha256(), ap.scale))
        .collect();
    w.set("hearth.merge.base_sha256", base_sha.clone());
    w.set("hearth.merge.adapters", record.join(","));
    let mut merged = 0;
    for t in &base.tensors {
        let start = (base.data_offset + t.offset) as usize;
        let bytes = &base.bytes()[start..start + t.n_bytes as usize];
        let mut updates = Vec::new();
        if let Some(site) = hearth_engine::adapter::parse_site(&t.name) {
            for ap in &adapters {
                if let Some(d) = ap.adapter.dense(site)? {
                    updates.push((ap.adapter.factor(ap.scale, d.rank), d));
                }
            }
        }
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
        for (f, d) in updates {
            let r = d.rank;
            for (o, row) in wf.chunks_exact_mut(n_in).enumerate() {
                for k in 0..r {
                    let c = f * d.b[o * r + k];
                    for (x, &av) in row.iter_mut().zip(&d.a[k * n_in..(k + 1) * n_in]) {
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
