//! `hearth inspect FILE`: metadata, the tensor table with types and sizes, and totals.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Result;
use hearth_gguf::{GgmlType, GgufFile, TensorInfo, Value};
use serde_json::json;

use crate::model_ref;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file, or a known model name (gemma3-270m).
    model: String,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Show every metadata array element instead of the first few.
    #[arg(long)]
    full: bool,
    /// Leave out the tensor table.
    #[arg(long)]
    no_tensors: bool,
}

pub fn run(a: Args) -> Result<()> {
    let path = model_ref::resolve(&a.model)?;
    let f = GgufFile::open(&path)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&to_json(&f, a.full))?
        )?;
        return Ok(());
    }

    writeln!(out, "file: {}", path.display())?;
    writeln!(
        out,
        "GGUF v{}, {} bytes, {} metadata keys, {} tensors, alignment {}, data at byte {}",
        f.version,
        f.file_size(),
        f.metadata().len(),
        f.tensors.len(),
        f.alignment,
        f.data_offset
    )?;
    writeln!(out, "\nmetadata:")?;
    let width = f.metadata().iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in f.metadata().iter() {
        let ty = match v {
            Value::Array(a) => format!("[{}]", a.elem_type().name()),
            v => v.value_type().name().to_string(),
        };
        let shown = if a.full {
            format!("{v:?}")
        } else {
            v.to_string()
        };
        writeln!(out, "  {k:width$}  {ty:8}  {shown}")?;
    }

    if !a.no_tensors {
        writeln!(out, "\ntensors:")?;
        let nw = f.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
        writeln!(
            out,
            "  {:nw$}  {:7}  {:22}  {:>12}  {:>13}",
            "name", "type", "shape", "elements", "bytes"
        )?;
        for t in &f.tensors {
            writeln!(
                out,
                "  {:nw$}  {:7}  {:22}  {:>12}  {:>13}",
                t.name,
                t.ty.name(),
                shape(t),
                t.n_elements,
                t.n_bytes
            )?;
        }
    }

    writeln!(out, "\ntotals:")?;
    let (params, bytes) = totals(&f.tensors);
    writeln!(
        out,
        "  {} tensors, {} parameters ({}), {} bytes of tensor data ({:.2} bits per parameter)",
        f.tensors.len(),
        params,
        human_count(params),
        bytes,
        if params > 0 {
            bytes as f64 * 8.0 / params as f64
        } else {
            0.0
        }
    )?;
    let counts = f.parameter_counts();
    if counts.active != counts.total {
        writeln!(
            out,
            "  mixture of experts: {} parameters ({}) active per token",
            counts.active,
            human_count(counts.active)
        )?;
    }
    for (ty, (n, p, b)) in by_type(&f.tensors) {
        writeln!(
            out,
            "  {:7} {:4} tensors  {:>13} parameters  {:>13} bytes",
            ty.name(),
            n,
            p,
            b
        )?;
    }
    Ok(())
}

fn shape(t: &TensorInfo) -> String {
    let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

fn totals(ts: &[TensorInfo]) -> (u64, u64) {
    (
        ts.iter().map(|t| t.n_elements).sum(),
        ts.iter().map(|t| t.n_bytes).sum(),
    )
}

fn by_type(ts: &[TensorInfo]) -> BTreeMap<GgmlType, (usize, u64, u64)> {
    let mut m = BTreeMap::new();
    for t in ts {
        let e = m.entry(t.ty).or_insert((0, 0, 0));
        e.0 += 1;
        e.1 += t.n_elements;
        e.2 += t.n_bytes;
    }
    m
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn value_json(v: &Value, full: bool) -> serde_json::Value {
    match v {
        Value::String(s) => json!(s),
        Value::Bool(b) => json!(b),
        Value::F32(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Array(a) if !full && a.len() > 16 => {
            json!({"type": a.elem_type().name(), "len": a.len(), "elided": true})
        }
        Value::Array(a) => array_json(a),
        v => v
            .as_i64()
            .map(|i| json!(i))
            .or_else(|| v.as_u64().map(|u| json!(u)))
            .unwrap_or(serde_json::Value::Null),
    }
}

fn array_json(a: &hearth_gguf::Array) -> serde_json::Value {
    use hearth_gguf::Array::*;
    match a {
        U8(v) => json!(v),
        I8(v) => json!(v),
        U16(v) => json!(v),
        I16(v) => json!(v),
        U32(v) => json!(v),
        I32(v) => json!(v),
        F32(v) => json!(v),
        Bool(v) => json!(v),
        String(v) => json!(v),
        Array(v) => serde_json::Value::Array(v.iter().map(array_json).collect()),
        U64(v) => json!(v),
        I64(v) => json!(v),
        F64(v) => json!(v),
    }
}

fn to_json(f: &GgufFile, full: bool) -> serde_json::Value {
    let metadata: serde_json::Map<String, serde_json::Value> = f
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_string(), value_json(v, full)))
        .collect();
    let tensors: Vec<_> = f
        .tensors
        .iter()
        .map(|t| {
            json!({"name": t.name, "type": t.ty.name(), "shape": t.dims, "elements": t.n_elements,
                        "bytes": t.n_bytes, "offset": t.offset})
        })
        .collect();
    let (params, bytes) = totals(&f.tensors);
    json!({
        "version": f.version,
        "file_bytes": f.file_size(),
        "alignment": f.alignment,
        "data_offset": f.data_offset,
        "metadata": metadata,
        "tensors": tensors,
        "totals": {"tensors": f.tensors.len(), "parameters": params,
                   "active_parameters": f.parameter_counts().active, "tensor_bytes": bytes},
    })
}
