/* Kernel parameter structs: passed by value to the kernels in kernels/*.cu, mirrored in Rust
 * by bindgen (build.rs, feature `cuda`) or by the committed src/backend/cuda/params.rs, which
 * CI checks against a fresh bindgen run. Plain C without includes (NVRTC has no system
 * headers): `int` is 32-bit and `long long` 64-bit on every target CUDA supports; no pointers,
 * no device code, so the layout is the same for nvcc, NVRTC, clang and rustc. Dimensions are element
 * counts; every buffer is row-major. */
#ifndef AFCLIP_PARAMS_H
#define AFCLIP_PARAMS_H

/* linear epilogue (gemm.cu): y[rows, cols] = act(y + bias) */
typedef struct LinearEpilogueParams {
    int rows;
    int cols;
    int has_bias;   /* 0: no bias */
    int quick_gelu; /* 1: act(v) = v * sigmoid(1.702 v), 0: identity */
} LinearEpilogueParams;

/* layer_norm (layernorm.cu): x, y [rows, dim] */
typedef struct LayerNormParams {
    int rows;
    int dim;
    float eps;
} LayerNormParams;

/* attention (attention.cu): qkv [batch, tokens, 3, heads, head_dim], out [batch, tokens,
 * heads, head_dim] */
typedef struct AttentionParams {
    int batch;
    int tokens;
    int heads;
    int head_dim;
    int causal; /* 1: token i attends to 0..=i */
    float scale;    /* 1 / sqrt(head_dim) */
} AttentionParams;

/* patch_im2col and embed_tokens (patch.cu) */
typedef struct PatchParams {
    int batch;
    int side;  /* image side S */
    int patch; /* patch side p */
    int grid;  /* S / p */
} PatchParams;

typedef struct EmbedParams {
    int batch;
    int n_patches;
    int dim;
} EmbedParams;

/* aggregate (aggregate.cu): x, out [batch, 1 + grid*grid, dim], window r x r weights */
typedef struct AggregateParams {
    int batch;
    int grid;
    int dim;
    int window;
} AggregateParams;

/* state_logits and abnormal_probability (score.cu) */
typedef struct ScoreParams {
    int rows;
    int dim;
    float scale;
} ScoreParams;

/* anomaly_maps (maps.cu): patch [batch, grid, grid] -> maps [batch, side, side] */
typedef struct MapsParams {
    int batch;
    int grid;
    int side;
    int radius; /* Gaussian radius; the half kernel has radius + 1 weights */
} MapsParams;

/* normalize_rgb (preprocess.cu): rgb [batch, height, width, 3] u8 -> images [batch, 3,
 * height, width] f32 */
typedef struct PreprocessParams {
    int batch;
    int height;
    int width;
} PreprocessParams;

/* f32 -> bf16 conversion (gemm.cu) */
typedef struct ConvertParams {
    long long n;
} ConvertParams;

/* quick_gelu, quick_gelu_backward (backward.cu): n elements */
typedef struct GeluParams {
    long long n;
} GeluParams;

/* row-wise backward ops and their column sums (backward.cu): x, dy [rows, dim]; a column sum
 * takes one partial per chunk of chunk_rows rows */
typedef struct BackwardRowsParams {
    int rows;
    int dim;
    int chunk_rows;
    float eps;   /* layer_norm_backward */
    float scale; /* state_logits_backward */
} BackwardRowsParams;

/* sum_partials (backward.cu): out[j] += sum_c partial[c * stride + j], c < chunks, j < n */
typedef struct SumPartialsParams {
    int chunks;
    int n;
    int stride;
} SumPartialsParams;

/* nearest_cosine (search.cu): queries [rows, dim], bank [bank_rows, dim], partial maxima
 * [chunks, rows], dist [rows] */
typedef struct SearchParams {
    int rows;
    int bank_rows;
    int dim;
    int chunk_rows; /* bank rows per chunk, a multiple of the 64-row tile */
    int chunks;
    float weight;
} SearchParams;

/* focal_loss, l1_loss (loss.cu): p, dp [rows, stride]; the block is columns
 * offset..offset + cols of every row, t [rows, cols] */
typedef struct LossParams {
    int rows;
    int stride;
    int offset;
    int cols;
    float weight; /* dp += weight * dloss/dp */
} LossParams;

/* patch alignment (loss.cu): z [batch, tokens, e], masks [batch, tokens - 1] */
typedef struct AlignParams {
    int batch;
    int tokens;
    int e;
    float weight; /* pal_backward: dz += weight * dvalue/dz */
} AlignParams;

/* adam (adam.cu): param, m, v, grad [n] */
typedef struct AdamParams {
    long long n;
    float step_size; /* lr / (1 - beta1^t) */
    float bc2_sqrt;  /* sqrt(1 - beta2^t) */
    float beta1;
    float beta2;
    float eps;
} AdamParams;

#endif
