//! PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`, as Hugging Face's
//! `peft` saves them) turned into llama.cpp's GGUF-LoRA layout, for every architecture hearth
//! runs — the same tensors `convert_lora_to_gguf.py` writes.
//!
//! - Module names: `…layers.N.self_attn.{q,k,v,o}_proj` → `blk.N.attn_{q,k,v,output}`,
//!   `…layers.N.mlp.{gate,up,down}_proj` → `blk.N.ffn_{gate,up,down}`, `lm_head` → `output`.
//! - Shapes: PEFT's `lora_A.weight` (r, n_in) and `lora_B.weight` (n_out, r), row-major, are
//!   ggml's {n_in, r} and {r, n_out} byte for byte.
//! - Llama: the GGUF converter permutes the rows of `q_proj` and `k_proj` (rotary pairs made
//!   adjacent); the rows of their `lora_B` are permuted the same way.
//! - Scale: `lora_alpha / r`, or `lora_alpha / √r` with `use_rslora` (written as alpha·√r, since
//!   GGUF-LoRA divides by r).
//! - `target_modules` (a list, or a regular expression peft matches against full names) must
//!   name only modules hearth can adapt, and every adapted module must be one of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hearth_gguf::{GgmlType, GgufFile, GgufWriter};
use serde_json::Value;

/// The files of a PEFT adapter given as its directory or either of its files.
pub fn files(path: &Path) -> Option<(PathBuf, PathBuf)> {
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        let name = path.file_name()?.to_str()?;
        if name != "adapter_config.json" && name != "adapter_model.safetensors" {
            return None;
        }
        path.parent()?.to_path_buf()
    };
    let (config, weights) = (
        dir.join("adapter_config.json"),
        dir.join("adapter_model.safetensors"),
    );
    (config.is_file() || weights.is_file()).then_some((config, weights))
}

/// The GGUF target name of a PEFT module name (`q_proj` → `attn_q`).
fn target(module: &str) -> Option<&'static str> {
    Some(match module {
        "q_proj" => "attn_q",
        "k_proj" => "attn_k",
        "v_proj" => "attn_v",
        "o_proj" => "attn_output",
        "gate_proj" => "ffn_gate",
        "up_proj" => "ffn_up",
        "down_proj" => "ffn_down",
        _ => return None,
    })
}

/// `(GGUF base tensor name, module's short name)` of a PEFT module path such as
/// `base_model.model.model.layers.3.self_attn.q_proj`.
fn site(module: &str) -> Option<(String, String)> {
    let short = module.rsplit('.').next()?.to_string();
    if short == "lm_head" {
        return Some(("output.weight".into(), short));
    }
    let (_, rest) = module.split_once("layers.")?;
    let (il, rest) = rest.split_once('.')?;
    let il: usize = il.parse().ok()?;
    let parent = rest.split('.').next()?;
    if !matches!(parent, "self_attn" | "mlp") {
        return None;
    }
    Some((format!("blk.{il}.{}.weight", target(&short)?), short))
}

/// Converts a PEFT adapter into an in-memory GGUF-LoRA for `base` (its architecture, head
/// counts and matrix shapes).
pub fn convert(
    config_path: &Path,
    weights_path: &Path,
    base: &GgufFile,
) -> Result<GgufWriter<'static>, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let config: Value = serde_json::from_slice(&read(config_path)?)
        .map_err(|e| format!("{}: not JSON: {e}", config_path.display()))?;
    let cfg = |k: &str| config.get(k).filter(|v| !v.is_null());
    let peft_type = cfg("peft_type").and_then(Value::as_str).unwrap_or("LORA");
    if peft_type != "LORA" {
        return Err(format!(
            "peft_type is {peft_type:?}; hearth applies LORA adapters"
        ));
    }
    for (key, ok) in [
        (
            "use_dora",
            cfg("use_dora").is_none_or(|v| v == &Value::Bool(false)),
        ),
        (
            "fan_in_fan_out",
            cfg("fan_in_fan_out").is_none_or(|v| v == &Value::Bool(false)),
        ),
        ("bias", cfg("bias").is_none_or(|v| v == "none")),
        (
            "modules_to_save",
            cfg("modules_to_save").is_none_or(|v| v.as_array().is_some_and(|a| a.is_empty())),
        ),
        (
            "rank_pattern",
            cfg("rank_pattern").is_none_or(|v| v.as_object().is_some_and(|o| o.is_empty())),
        ),
        (
            "alpha_pattern",
            cfg("alpha_pattern").is_none_or(|v| v.as_object().is_some_and(|o| o.is_empty())),
        ),
    ] {
        if !ok {
            return Err(format!(
                "adapter_config.json sets {key} = {}; hearth converts plain LoRA adapters \
                 (no DoRA, biases, saved modules, transposed weights or per-module ranks)",
                cfg(key).unwrap()
            ));
        }
    }
    let r = cfg("r")
        .and_then(Value::as_u64)
        .ok_or("adapter_config.json has no rank r")? as usize;
    let lora_alpha = cfg("lora_alpha")
        .and_then(Value::as_f64)
        .unwrap_or(r as f64) as f32;
    let rslora = cfg("use_rslora").and_then(Value::as_bool).unwrap_or(false);
    let alpha = if rslora {
        lora_alpha * (r as f32).sqrt()
    } else {
        lora_alpha
    };
    let targets: Option<Vec<String>> = match cfg("target_modules") {
        None => None,
        Some(Value::String(_)) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or("target_modules holds a non-string")
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(other) => return Err(format!("target_modules is {other}")),
    };
    if let Some(t) = &targets {
        for m in t {
            if m != "lm_head" && target(m).is_none() {
                return Err(format!(
                    "target module {m:?} is not one hearth can adapt (q_proj, k_proj, v_proj, \
                     o_proj, gate_proj, up_proj, down_proj, lm_head)"
                ));
            }
        }
    }

    let bytes = read(weights_path)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: {e}", weights_path.display()))?;
    let md = base.metadata();
    let arch = md.architecture().map_err(|e| e.to_string())?.to_string();
    let heads = |k: &str| md.opt_u64(&format!("{arch}.attention.{k}")).ok().flatten();
    let n_head = heads("head_count").unwrap_or(0) as usize;
    let n_head_kv = heads("head_count_kv").map_or(n_head, |v| v as usize);

    // module → (A, B)
    let mut pairs: BTreeMap<String, [Option<safetensors::tensor::TensorView>; 2]> = BTreeMap::new();
    for (name, view) in st.tensors() {
        let (module, which) = if let Some(m) = name.strip_suffix(".lora_A.weight") {
            (m, 0)
        } else if let Some(m) = name.strip_suffix(".lora_B.weight") {
            (m, 1)
        } else {
            return Err(format!("tensor {name:?} is not a lora_A or lora_B weight"));
        };
        pairs.entry(module.to_string()).or_default()[which] = Some(view);
    }
    if pairs.is_empty() {
        return Err("the adapter has no LoRA tensors".into());
    }
    let mut w = GgufWriter::new();
    w.set("general.architecture", arch.clone());
    w.set("general.type", "adapter".to_string());
    w.set("adapter.type", "lora".to_string());
    w.set("adapter.lora.alpha", alpha);
    if let Some(name) = cfg("base_model_name_or_path").and_then(Value::as_str) {
        w.set("adapter.peft.base_model_name_or_path", name.to_string());
    }
    for (module, [a, b]) in pairs {
        let (Some(a), Some(b)) = (a, b) else {
            return Err(format!("{module}: only one of lora_A and lora_B"));
        };
        let (gguf_name, short) = site(&module).ok_or_else(|| {
            format!(
                "{module}: not a module hearth can adapt (attention and MLP projections, lm_head)"
            )
        })?;
        if let Some(t) = &targets
            && !t.contains(&short)
        {
            return Err(format!(
                "{module} has LoRA weights but {short} is not in target_modules"
            ));
        }
        let base_t = base
            .tensors
            .iter()
            .find(|t| t.name == gguf_name)
            .ok_or_else(|| format!("{module}: the base model has no {gguf_name}"))?;
        let (n_in, n_out) = match base_t.dims[..] {
            [i, o] => (i as usize, o as usize),
            _ => return Err(format!("{gguf_name} is not a matrix")),
        };
        let (sa, sb) = (a.shape(), b.shape());
        if sa != [r, n_in] || sb != [n_out, r] {
            return Err(format!(
                "{module}: lora_A {sa:?} and lora_B {sb:?} do not fit the base matrix {gguf_name} \
                 ({n_in} inputs, {n_out} outputs) at rank {r}: expected [{r}, {n_in}] and [{n_out}, {r}]"
            ));
        }
        let ty = |v: &safetensors::tensor::TensorView| match v.dtype() {
            safetensors::Dtype::F32 => Ok(GgmlType::F32),
            safetensors::Dtype::F16 => Ok(GgmlType::F16),
            safetensors::Dtype::BF16 => Ok(GgmlType::BF16),
            d => Err(format!(
                "{module}: {d:?} tensors; LoRA weights must be F32, F16 or BF16"
            )),
        };
        let (ta, tb) = (ty(&a)?, ty(&b)?);
        let mut b_data = b.data().to_vec();
        let heads_here = match short.as_str() {
            "q_proj" => n_head,
            "k_proj" => n_head_kv,
            _ => 0,
        };
        if arch == "llama" && heads_here > 0 {
            b_data = permute_rows(&b_data, n_out, heads_here)
                .ok_or_else(|| format!("{module}: {n_out} rows cannot hold {heads_here} heads"))?;
        }
        w.add_tensor(
            format!("{gguf_name}.lora_a"),
            &[n_in as u64, r as u64],
            ta,
            a.data().to_vec(),
        )
        .map_err(|e| e.to_string())?;
        w.add_tensor(
            format!("{gguf_name}.lora_b"),
            &[r as u64, n_out as u64],
            tb,
            b_data,
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(w)
}

/// llama.cpp's `permute` of a Llama q/k projection's rows (`n_head` heads of `2·half` rows):
/// new row `h·2half + 2j + i` = old row `h·2half + i·half + j`.
fn permute_rows(data: &[u8], rows: usize, n_head: usize) -> Option<Vec<u8>> {
    if n_head == 0 || !rows.is_multiple_of(2 * n_head) || !data.len().is_multiple_of(rows) {
        return None;
    }
    let rb = data.len() / rows;
    let half = rows / n_head / 2;
    let mut out = vec![0u8; data.len()];
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..half {
                let (new, old) = (h * 2 * half + 2 * j + i, h * 2 * half + i * half + j);
                out[new * rb..(new + 1) * rb].copy_from_slice(&data[old * rb..(old + 1) * rb]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_map_to_gguf_tensors() {
        assert_eq!(
            site("base_model.model.model.layers.3.self_attn.q_proj"),
            Some(("blk.3.attn_q.weight".into(), "q_proj".into()))
        );
        assert_eq!(
            site("base_model.model.model.language_model.layers.0.mlp.down_proj"),
            Some(("blk.0.ffn_down.weight".into(), "down_proj".into()))
        );
        assert_eq!(site("base_model.model.lm_head").unwrap().0, "output.weight");
        assert_eq!(
            site("base_model.model.model.layers.1.self_attn.rotary"),
            None
        );
        assert_eq!(site("base_model.model.model.embed_tokens"), None);
        // 2 heads of 4 rows: rows (0 1 2 3)(4 5 6 7) → (0 2 1 3)(4 6 5 7).
        let rows: Vec<u8> = (0..8).collect();
        assert_eq!(
            permute_rows(&rows, 8, 2).unwrap(),
            vec![0, 2, 1, 3, 4, 6, 5, 7]
        );
    }
}
