// Adam (SPEC §8; CPU twin src/backend/cpu/adam.rs): param, m, v, grad [n], torch's order in
// f32 with every operation rounded on its own (no fused multiply-add), so the result is the
// CPU twin's bit for bit:
//
//   m += (1 - beta1) (g - m),   v = beta2 v + (1 - beta2) g g
//   param -= step_size * (m / (sqrt(v) / bc2_sqrt + eps))
//
// step_size = lr / (1 - beta1^t) and bc2_sqrt = sqrt(1 - beta2^t) come from the host (f64,
// rounded to f32). One thread per element, grid-stride.
#include "common.cuh"

extern "C" __global__ void adam(float* param, float* m, float* v, const float* grad,
                                AdamParams q) {
    float c1 = 1.0f - q.beta1, c2 = 1.0f - q.beta2;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < q.n;
         i += (long long)gridDim.x * blockDim.x) {
        float g = grad[i];
        float mi = __fadd_rn(m[i], __fmul_rn(c1, __fsub_rn(g, m[i])));
        float vi = __fadd_rn(__fmul_rn(q.beta2, v[i]), __fmul_rn(__fmul_rn(c2, g), g));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), q.bc2_sqrt), q.eps);
        param[i] = __fsub_rn(param[i], __fmul_rn(q.step_size, __fdiv_rn(mi, denom)));
        m[i] = mi;
        v[i] = vi;
    }
}
