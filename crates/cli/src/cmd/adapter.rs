//! `hearth adapter`: look into LoRA adapter files and convert PEFT adapters.

use std::path::PathBuf;

use anyhow::Result;
use hearth_engine::adapter::binding;
use hearth_gguf::GgufFile;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Show an adapter's type, base binding, alpha, ranks and targeted matrices (as JSON with
    /// --json); with -m, also whether it fits that base model.
    Inspect(InspectArgs),
    /// Convert a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) to
    /// llama.cpp's GGUF-LoRA, recording the base model's hash.
    Convert(ConvertArgs),
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
