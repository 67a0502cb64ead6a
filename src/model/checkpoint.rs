//! A CLIP checkpoint read from a model directory: naming detected (OpenAI/open_clip or Hugging
//! Face transformers), every size inferred from tensor shapes, weights brought into one
//! canonical host layout (OpenAI semantics, matrices in torch `Linear` `[out, in]` layout).

use super::tensors::TensorFile;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Sizes of a CLIP model, all inferred from its tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClipConfig {
    pub vision_width: usize,
    pub vision_layers: usize,
    pub vision_heads: usize,
    pub vision_mlp: usize,
    pub patch: usize,
    /// Side of the patch grid the position embedding was trained on (24 for ViT-L/14@336).
    pub trained_grid: usize,
    pub embed_dim: usize,
    pub text_width: usize,
    pub text_layers: usize,
    pub text_heads: usize,
    pub text_mlp: usize,
    pub context: usize,
    pub vocab: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    OpenAi,
    HuggingFace,
}

/// One pre-LN transformer block: `x += attn(ln_1(x)); x += mlp(ln_2(x))`.
pub struct BlockWeights {
    pub ln1_w: Vec<f32>,
    pub ln1_b: Vec<f32>,
    /// `[3w, w]`: q rows, then k, then v.
    pub in_proj_w: Vec<f32>,
    pub in_proj_b: Vec<f32>,
    pub out_w: Vec<f32>,
    pub out_b: Vec<f32>,
    pub ln2_w: Vec<f32>,
    pub ln2_b: Vec<f32>,
    /// `[mlp, w]`
    pub fc_w: Vec<f32>,
    pub fc_b: Vec<f32>,
    /// `[w, mlp]`
    pub proj_w: Vec<f32>,
    pub proj_b: Vec<f32>,
}

pub struct VisionWeights {
    /// Patch-embedding conv `[w, 3, p, p]` flattened to `[w, 3*p*p]`.
    pub conv: Vec<f32>,
    pub cls: Vec<f32>,
    /// `[1 + trained_grid², w]`
    pub pos: Vec<f32>,
    pub ln_pre_w: Vec<f32>,
    pub ln_pre_b: Vec<f32>,
    pub blocks: Vec<BlockWeights>,
    pub ln_post_w: Vec<f32>,
    pub ln_post_b: Vec<f32>,
    /// `visual.proj` transposed to `[e, w]`.
    pub proj: Vec<f32>,
}

pub struct TextWeights {
    /// `[vocab, t]`
    pub token_embedding: Vec<f32>,
    /// `[context, t]`
    pub pos: Vec<f32>,
    pub blocks: Vec<BlockWeights>,
    pub ln_final_w: Vec<f32>,
    pub ln_final_b: Vec<f32>,
    /// `text_projection` transposed to `[e, t]`.
    pub proj: Vec<f32>,
}

pub struct Checkpoint {
    pub path: PathBuf,
    pub naming: Naming,
    pub config: ClipConfig,
    pub vision: VisionWeights,
    pub text: TextWeights,
}

/// The safetensors file of a model directory: `weights` when given (relative to `dir` or
/// absolute), else the only `*.safetensors` in `dir`.
pub fn find_weights(dir: &Path, weights: Option<&Path>) -> Result<PathBuf> {
    if let Some(w) = weights {
        let p = if w.is_absolute() {
            w.to_path_buf()
        } else {
            dir.join(w)
        };
        if !p.is_file() {
            bail!("weights file {} does not exist", p.display());
        }
        return Ok(p);
    }
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read model directory {}", dir.display()))?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot read model directory {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            found.push(path);
        }
    }
    found.sort();
    match found.len() {
        0 => bail!(
            "model directory {} holds no .safetensors file",
            dir.display()
        ),
        1 => Ok(found.remove(0)),
        _ => bail!(
            "model directory {} holds {} checkpoints ({}); choose one with --weights FILE",
            dir.display(),
            found.len(),
            found
                .iter()
                .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl Checkpoint {
    pub fn load(path: &Path) -> Result<Self> {
        let file = TensorFile::open(path)?;
        let naming = if file.contains("visual.conv1.weight") {
            Naming::OpenAi
        } else if file.contains("vision_model.embeddings.patch_embedding.weight") {
            Naming::HuggingFace
        } else {
            bail!(
                "{}: not a CLIP checkpoint (neither visual.conv1.weight nor \
                 vision_model.embeddings.patch_embedding.weight is present)",
                path.display()
            );
        };
        let names = Names::new(naming);
        let config = infer_config(&file, &names)?;
        let vision = read_vision(&file, &names, &config)?;
        let text = read_text(&file, &names, &config)?;
        Ok(Self {
            path: path.to_path_buf(),
            naming,
            config,
            vision,
            text,
        })
    }
}

/// Tensor names of one naming scheme.
struct Names {
    naming: Naming,
}

impl Names {
    fn new(naming: Naming) -> Self {
        Self { naming }
    }
    fn hf(&self) -> bool {
        self.naming == Naming::HuggingFace
    }
    fn conv(&self) -> &'static str {
        if self.hf() {
            "vision_model.embeddings.patch_embedding.weight"
        } else {
            "visual.conv1.weight"
        }
    }
    fn cls(&self) -> &'static str {
        if self.hf() {
            "vision_model.embeddings.class_embedding"
        } else {
            "visual.class_embedding"
        }
    }
    fn vision_pos(&self) -> &'static str {
        if self.hf() {
            "vision_model.embeddings.position_embedding.weight"
        } else {
            "visual.positional_embedding"
        }
    }
    fn ln_pre(&self) -> &'static str {
        if self.hf() {
            "vision_model.pre_layrnorm"
        } else {
            "visual.ln_pre"
        }
    }
    fn ln_post(&self) -> &'static str {
        if self.hf() {
            "vision_model.post_layernorm"
        } else {
            "visual.ln_post"
        }
    }
    fn vision_block(&self, i: usize) -> String {
        if self.hf() {
            format!("vision_model.encoder.layers.{i}")
        } else {
            format!("visual.transformer.resblocks.{i}")
        }
    }
    fn vision_blocks_prefix(&self) -> &'static str {
        if self.hf() {
            "vision_model.encoder.layers."
        } else {
            "visual.transformer.resblocks."
        }
    }
    fn vision_proj(&self) -> &'static str {
        if self.hf() {
            "visual_projection.weight"
        } else {
            "visual.proj"
        }
    }
    fn token_embedding(&self) -> &'static str {
        if self.hf() {
            "text_model.embeddings.token_embedding.weight"
        } else {
            "token_embedding.weight"
        }
    }
    fn text_pos(&self) -> &'static str {
        if self.hf() {
            "text_model.embeddings.position_embedding.weight"
        } else {
            "positional_embedding"
        }
    }
    fn text_block(&self, i: usize) -> String {
        if self.hf() {
            format!("text_model.encoder.layers.{i}")
        } else {
            format!("transformer.resblocks.{i}")
        }
    }
    fn text_blocks_prefix(&self) -> &'static str {
        if self.hf() {
            "text_model.encoder.layers."
        } else {
            "transformer.resblocks."
        }
    }
    fn ln_final(&self) -> &'static str {
        if self.hf() {
            "text_model.final_layer_norm"
        } else {
            "ln_final"
        }
    }
    fn text_proj(&self) -> &'static str {
        if self.hf() {
            "text_projection.weight"
        } else {
            "text_projection"
        }
    }
}

fn shape_of(file: &TensorFile, name: &str, rank: usize) -> Result<Vec<usize>> {
    let shape = file.shape(name).with_context(|| {
        format!(
            "{}: missing tensor {name} (needed to infer the model's sizes)",
            file.path().display()
        )
    })?;
    if shape.len() != rank {
        bail!(
            "{}: tensor {name} has shape {shape:?}, expected {rank} dimensions",
            file.path().display()
        );
    }
    Ok(shape)
}

fn count_blocks(file: &TensorFile, prefix: &str) -> usize {
    file.names()
        .iter()
        .filter_map(|n| n.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

fn heads_of(file: &TensorFile, what: &str, width: usize) -> Result<usize> {
    if width == 0 || !width.is_multiple_of(64) {
        bail!(
            "{}: {what} width {width} is not a multiple of the 64-wide attention heads",
            file.path().display()
        );
    }
    Ok(width / 64)
}

fn infer_config(file: &TensorFile, n: &Names) -> Result<ClipConfig> {
    let conv = shape_of(file, n.conv(), 4)?;
    let (vision_width, patch) = (conv[0], conv[2]);
    if conv[1] != 3 || conv[3] != patch {
        bail!(
            "{}: tensor {} has shape {conv:?}, expected [width, 3, patch, patch]",
            file.path().display(),
            n.conv()
        );
    }
    let pos = shape_of(file, n.vision_pos(), 2)?;
    let trained_grid = ((pos[0].saturating_sub(1)) as f64).sqrt().round() as usize;
    if trained_grid == 0 || trained_grid * trained_grid + 1 != pos[0] {
        bail!(
            "{}: tensor {} has {} rows; expected 1 + a square number of patch positions",
            file.path().display(),
            n.vision_pos(),
            pos[0]
        );
    }
    let vision_layers = count_blocks(file, n.vision_blocks_prefix());
    let text_layers = count_blocks(file, n.text_blocks_prefix());
    if vision_layers == 0 || text_layers == 0 {
        bail!(
            "{}: found {vision_layers} vision and {text_layers} text transformer blocks; both \
             towers are needed",
            file.path().display()
        );
    }
    let vproj = shape_of(file, n.vision_proj(), 2)?;
    let embed_dim = if n.hf() { vproj[0] } else { vproj[1] };
    let tok = shape_of(file, n.token_embedding(), 2)?;
    let (vocab, text_width) = (tok[0], tok[1]);
    let tpos = shape_of(file, n.text_pos(), 2)?;
    let context = tpos[0];
    let fc = if n.hf() {
        "mlp.fc1.weight"
    } else {
        "mlp.c_fc.weight"
    };
    let vision_mlp = shape_of(file, &format!("{}.{fc}", n.vision_block(0)), 2)?[0];
    let text_mlp = shape_of(file, &format!("{}.{fc}", n.text_block(0)), 2)?[0];
    Ok(ClipConfig {
        vision_width,
        vision_layers,
        vision_heads: heads_of(file, "vision", vision_width)?,
        vision_mlp,
        patch,
        trained_grid,
        embed_dim,
        text_width,
        text_layers,
        text_heads: heads_of(file, "text", text_width)?,
        text_mlp,
        context,
        vocab,
    })
}

fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

fn read_block(
    file: &TensorFile,
    hf: bool,
    prefix: &str,
    w: usize,
    mlp: usize,
) -> Result<BlockWeights> {
    let get = |name: &str, shape: &[usize]| file.read(&format!("{prefix}.{name}"), shape);
    let (in_proj_w, in_proj_b) = if hf {
        let mut wq = get("self_attn.q_proj.weight", &[w, w])?;
        wq.extend(get("self_attn.k_proj.weight", &[w, w])?);
        wq.extend(get("self_attn.v_proj.weight", &[w, w])?);
        let mut bq = get("self_attn.q_proj.bias", &[w])?;
        bq.extend(get("self_attn.k_proj.bias", &[w])?);
        bq.extend(get("self_attn.v_proj.bias", &[w])?);
        (wq, bq)
    } else {
        (
            get("attn.in_proj_weight", &[3 * w, w])?,
            get("attn.in_proj_bias", &[3 * w])?,
        )
    };
    let (ln1, ln2, out, fc, proj) = if hf {
        (
            "layer_norm1",
            "layer_norm2",
            "self_attn.out_proj",
            "mlp.fc1",
            "mlp.fc2",
        )
    } else {
        ("ln_1", "ln_2", "attn.out_proj", "mlp.c_fc", "mlp.c_proj")
    };
    Ok(BlockWeights {
        ln1_w: get(&format!("{ln1}.weight"), &[w])?,
        ln1_b: get(&format!("{ln1}.bias"), &[w])?,
        in_proj_w,
        in_proj_b,
        out_w: get(&format!("{out}.weight"), &[w, w])?,
        out_b: get(&format!("{out}.bias"), &[w])?,
        ln2_w: get(&format!("{ln2}.weight"), &[w])?,
        ln2_b: get(&format!("{ln2}.bias"), &[w])?,
        fc_w: get(&format!("{fc}.weight"), &[mlp, w])?,
        fc_b: get(&format!("{fc}.bias"), &[mlp])?,
        proj_w: get(&format!("{proj}.weight"), &[w, mlp])?,
        proj_b: get(&format!("{proj}.bias"), &[w])?,
    })
}

fn read_vision(file: &TensorFile, n: &Names, c: &ClipConfig) -> Result<VisionWeights> {
    let w = c.vision_width;
    let conv = file.read(n.conv(), &[w, 3, c.patch, c.patch])?;
    let ln = |base: &str| -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((
            file.read(&format!("{base}.weight"), &[w])?,
            file.read(&format!("{base}.bias"), &[w])?,
        ))
    };
    let (ln_pre_w, ln_pre_b) = ln(n.ln_pre())?;
    let (ln_post_w, ln_post_b) = ln(n.ln_post())?;
    let proj = if n.hf() {
        file.read(n.vision_proj(), &[c.embed_dim, w])?
    } else {
        transpose(
            &file.read(n.vision_proj(), &[w, c.embed_dim])?,
            w,
            c.embed_dim,
        )
    };
    let blocks = (0..c.vision_layers)
        .map(|i| read_block(file, n.hf(), &n.vision_block(i), w, c.vision_mlp))
        .collect::<Result<_>>()?;
    Ok(VisionWeights {
        conv,
        cls: file.read(n.cls(), &[w])?,
        pos: file.read(n.vision_pos(), &[c.trained_grid * c.trained_grid + 1, w])?,
        ln_pre_w,
        ln_pre_b,
        blocks,
        ln_post_w,
        ln_post_b,
        proj,
    })
}

fn read_text(file: &TensorFile, n: &Names, c: &ClipConfig) -> Result<TextWeights> {
    let t = c.text_width;
    let proj = if n.hf() {
        file.read(n.text_proj(), &[c.embed_dim, t])?
    } else {
        transpose(
            &file.read(n.text_proj(), &[t, c.embed_dim])?,
            t,
            c.embed_dim,
        )
    };
    let blocks = (0..c.text_layers)
        .map(|i| read_block(file, n.hf(), &n.text_block(i), t, c.text_mlp))
        .collect::<Result<_>>()?;
    Ok(TextWeights {
        token_embedding: file.read(n.token_embedding(), &[c.vocab, t])?,
        pos: file.read(n.text_pos(), &[c.context, t])?,
        blocks,
        ln_final_w: file.read(&format!("{}.weight", n.ln_final()), &[t])?,
        ln_final_b: file.read(&format!("{}.bias", n.ln_final()), &[t])?,
        proj,
    })
}
