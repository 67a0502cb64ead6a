//! The compiled kernels (`kernels/*.cu`, built by build.rs) and their loading: once per
//! backend, each module from the best image the build embedded for this GPU: a cubin of its
//! arch, else the `compute_90` PTX (JIT-compiled by the driver, sm_90 and newer), else the
//! source through NVRTC (builds without nvcc).

use anyhow::{anyhow, bail, Context, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{CompileOptions, Ptx};
use std::collections::HashMap;
use std::sync::Arc;

/// One `kernels/<name>.cu` as the build embedded it.
pub(crate) struct KernelModule {
    pub name: &'static str,
    /// `(arch, cubin)`, arch as in `CUDA_ARCHS` (90 = sm_90).
    pub cubins: &'static [(u32, &'static [u8])],
    /// PTX for `compute_90`, when nvcc was present.
    pub ptx: Option<&'static str>,
    /// The source with its `kernels/` headers inlined, for NVRTC.
    pub source: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// The arch of the embedded PTX (build.rs `PTX_ARCH`).
const PTX_ARCH: (i32, i32) = (9, 0);

/// Every kernel the backend launches, by module.
const FUNCTIONS: &[(&str, &[&str])] = &[
    ("adam", &["adam"]),
    ("aggregate", &["aggregate"]),
    (
        "attention",
        &["attention_d32", "attention_d64", "attention_d128"],
    ),
    ("attention_tc", &["attention_tc_d64"]),
    (
        "backward",
        &[
            "quick_gelu",
            "quick_gelu_backward",
            "sum_partials",
            "bias_grad_partial",
            "layer_norm_stats",
            "layer_norm_backward_dx",
            "layer_norm_backward_params",
            "state_logits_backward_dz",
            "state_logits_backward_dtext",
            "abnormal_probability_backward",
            "attention_backward_stats_d32",
            "attention_backward_dq_d32",
            "attention_backward_dkv_d32",
            "attention_backward_stats_d64",
            "attention_backward_dq_d64",
            "attention_backward_dkv_d64",
            "attention_backward_stats_d128",
            "attention_backward_dq_d128",
            "attention_backward_dkv_d128",
        ],
    ),
    ("gemm", &["f32_to_bf16", "linear_epilogue"]),
    ("layernorm", &["layer_norm"]),
    (
        "loss",
        &[
            "focal_loss",
            "l1_loss",
            "pal_norms",
            "pal_sums",
            "pal_finalize",
            "pal_backward",
        ],
    ),
    ("maps", &["upsample_bilinear", "gauss_axis0", "gauss_axis1"]),
    ("patch", &["patch_im2col", "embed_tokens"]),
    ("preprocess", &["normalize_rgb"]),
    ("score", &["state_logits", "abnormal_probability"]),
    (
        "search",
        &["nearest_cosine_partial", "nearest_cosine_finish"],
    ),
];

pub(crate) struct Kernels {
    functions: HashMap<&'static str, CudaFunction>,
    /// How each module was loaded, e.g. `attention: cubin sm_90`.
    pub provenance: Vec<String>,
}

fn load_module(
    ctx: &Arc<CudaContext>,
    m: &KernelModule,
    cc: (i32, i32),
) -> Result<(Arc<CudaModule>, String)> {
    let mut errors = Vec::new();
    let cubin = m
        .cubins
        .iter()
        .find(|(arch, _)| (*arch as i32 / 10, *arch as i32 % 10) == cc);
    if let Some((arch, image)) = cubin {
        match ctx.load_module(Ptx::from_binary(image.to_vec())) {
            Ok(module) => return Ok((module, format!("cubin sm_{arch}"))),
            Err(e) => errors.push(format!("cubin sm_{arch}: {e}")),
        }
    }
    if let Some(ptx) = m.ptx.filter(|_| cc >= PTX_ARCH) {
        match ctx.load_module(Ptx::from_src(ptx)) {
            Ok(module) => return Ok((module, "ptx compute_90".into())),
            Err(e) => errors.push(format!("ptx compute_90: {e}")),
        }
    }
    // SAFETY: only asks whether the NVRTC library can be loaded.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        let arch = format!("--gpu-architecture=sm_{}{}", cc.0, cc.1);
        let opts = CompileOptions {
            options: vec![arch, "--std=c++17".into()],
            name: Some(format!("{}.cu", m.name)),
            ..Default::default()
        };
        match cudarc::nvrtc::compile_ptx_with_opts(m.source, opts) {
            Ok(ptx) => match ctx.load_module(ptx) {
                Ok(module) => return Ok((module, format!("nvrtc sm_{}{}", cc.0, cc.1))),
                Err(e) => errors.push(format!("nvrtc output: {e}")),
            },
            Err(e) => errors.push(format!("nvrtc: {e}")),
        }
    } else {
        errors.push("nvrtc: library not found".into());
    }
    bail!(
        "kernels/{}.cu: no loadable image for sm_{}{} ({})",
        m.name,
        cc.0,
        cc.1,
        errors.join("; ")
    )
}

impl Kernels {
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let cc = ctx
            .compute_capability()
            .context("cuda: reading the compute capability")?;
        let mut functions = HashMap::new();
        let mut provenance = Vec::new();
        for &(module_name, names) in FUNCTIONS {
            let m = KERNELS
                .iter()
                .find(|m| m.name == module_name)
                .ok_or_else(|| anyhow!("kernels/{module_name}.cu was not embedded by the build"))?;
            let (module, how) = load_module(ctx, m, cc)?;
            provenance.push(format!("{module_name}: {how}"));
            for &name in names {
                let f = module
                    .load_function(name)
                    .with_context(|| format!("kernels/{module_name}.cu: loading `{name}`"))?;
                functions.insert(name, f);
            }
        }
        Ok(Self {
            functions,
            provenance,
        })
    }

    pub fn get(&self, name: &str) -> Result<&CudaFunction> {
        self.functions
            .get(name)
            .ok_or_else(|| anyhow!("cuda: kernel `{name}` is not loaded"))
    }
}
