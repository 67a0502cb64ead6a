// Scores (SPEC §6; CPU twin src/backend/cpu/score.rs)
//
//   state_logits:         z [rows, dim], text [2, dim] (L2-normalised), logits [rows, 2];
//                         logits[r, s] += <z[r], text[s]> / |z[r]| * scale
//                         (a zero row gives NaN, as torch's z / z.norm() does)
//   abnormal_probability: probs[r] = softmax(logits[r])[1] = 1 / (1 + e^(l0 - l1)), evaluated
//                         as e / (1 + e), e = e^(l1 - l0), when l1 < l0 (no overflow)
//
// state_logits: one warp per row (blockDim (32, ROWS_PER_BLOCK)); abnormal_probability: one
// thread per row.
#include "common.cuh"

extern "C" __global__ void state_logits(float* logits, const float* z, const float* text,
                                        ScoreParams p) {
    int row = blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= p.rows) return;
    const float* zr = z + (long long)row * p.dim;
    float d0 = 0.0f, d1 = 0.0f, sq = 0.0f;
    for (int i = threadIdx.x; i < p.dim; i += WARP) {
        float v = zr[i];
        d0 = fmaf(v, text[i], d0);
        d1 = fmaf(v, text[p.dim + i], d1);
        sq = fmaf(v, v, sq);
    }
    d0 = warp_sum(d0);
    d1 = warp_sum(d1);
    sq = warp_sum(sq);
    if (threadIdx.x == 0) {
        float inv = p.scale / sqrtf(sq);
        logits[2 * row] += d0 * inv;
        logits[2 * row + 1] += d1 * inv;
    }
}

extern "C" __global__ void abnormal_probability(float* probs, const float* logits,
                                                ScoreParams p) {
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < p.rows; r += gridDim.x * blockDim.x) {
        float d = logits[2 * r + 1] - logits[2 * r];
        float pr;
        if (d >= 0.0f) {
            pr = 1.0f / (1.0f + expf(-d));
        } else {
            float e = expf(d);
            pr = e / (1.0f + e);
        }
        probs[r] = pr;
    }
}
