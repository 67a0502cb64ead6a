// anomaly_maps (SPEC §6; CPU twin src/backend/cpu/maps.rs): patch [batch, g, g] ->
// maps [batch, S, S], in three launches over all images at once:
//
//   upsample_bilinear: torch F.interpolate(bilinear, align_corners=False) in f32:
//       scale = g / S, src = max(scale * (dst + 0.5) - 0.5, 0), i0 = min(floor(src), g - 1),
//       i1 = min(i0 + 1, g - 1), l1 = clamp(src - i0, 0, 1), l0 = 1 - l1;
//       out = l0h * (l0w x00 + l1w x01) + l1h * (l0w x10 + l1w x11)
//   gauss_axis0 (rows), then gauss_axis1 (columns): scipy.ndimage.correlate1d with the
//       symmetric half kernel half[0..=radius] (f64, normalised on the host):
//       acc = half[0] x[i] + sum_{j = radius..1} half[j] (x[i - j] + x[i + j]), in f64,
//       stored as f32 between the passes; mode "reflect" (d c b a | a b c d) repeated with
//       period 2n: i -> m = i mod 2n, m < n ? m : 2n - 1 - m.
//
// Explicitly rounded arithmetic (__fmul_rn, __dadd_rn, ...) keeps the compiler from fusing
// multiply-adds, so the results equal the CPU twin's bit for bit. One thread per output pixel.
#include "common.cuh"

__device__ __forceinline__ void bilinear_tap(int dst, int in, int out, int* i0, int* i1,
                                             float* l0, float* l1) {
    float scale = __fdiv_rn((float)in, (float)out);
    float src = __fsub_rn(__fmul_rn(scale, __fadd_rn((float)dst, 0.5f)), 0.5f);
    if (src < 0.0f) src = 0.0f;
    int a = min((int)floorf(src), in - 1);
    float w = fminf(fmaxf(__fsub_rn(src, (float)a), 0.0f), 1.0f);
    *i0 = a;
    *i1 = a < in - 1 ? a + 1 : a;
    *l1 = w;
    *l0 = __fsub_rn(1.0f, w);
}

__device__ __forceinline__ int reflect_index(int i, int n) {
    int period = 2 * n;
    int m = i % period;
    if (m < 0) m += period;
    return m < n ? m : period - 1 - m;
}

extern "C" __global__ void upsample_bilinear(float* maps, const float* patch, MapsParams p) {
    long long plane = (long long)p.side * p.side;
    long long n = p.batch * plane;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x) {
        int x = (int)(e % p.side);
        int y = (int)((e / p.side) % p.side);
        const float* src = patch + (e / plane) * p.grid * p.grid;
        int y0, y1, x0, x1;
        float a0, a1, b0, b1;
        bilinear_tap(y, p.grid, p.side, &y0, &y1, &a0, &a1);
        bilinear_tap(x, p.grid, p.side, &x0, &x1, &b0, &b1);
        const float* top = src + y0 * p.grid;
        const float* bottom = src + y1 * p.grid;
        float t = __fadd_rn(__fmul_rn(b0, top[x0]), __fmul_rn(b1, top[x1]));
        float b = __fadd_rn(__fmul_rn(b0, bottom[x0]), __fmul_rn(b1, bottom[x1]));
        maps[e] = __fadd_rn(__fmul_rn(a0, t), __fmul_rn(a1, b));
    }
}

// `step` is the distance between neighbours along the filtered axis: S for axis 0, 1 for
// axis 1.
__device__ __forceinline__ void gauss_line(float* dst, const float* src, const double* half,
                                           MapsParams p, int axis) {
    long long plane = (long long)p.side * p.side;
    long long n = p.batch * plane;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x) {
        int x = (int)(e % p.side);
        int y = (int)((e / p.side) % p.side);
        const float* img = src + (e / plane) * plane;
        int i = axis == 0 ? y : x;
        long long base = axis == 0 ? x : (long long)y * p.side;
        long long step = axis == 0 ? p.side : 1;
        double acc = __dmul_rn((double)img[base + i * step], half[0]);
        for (int j = p.radius; j >= 1; --j) {
            double u = img[base + reflect_index(i - j, p.side) * step];
            double v = img[base + reflect_index(i + j, p.side) * step];
            acc = __dadd_rn(acc, __dmul_rn(__dadd_rn(u, v), half[j]));
        }
        dst[e] = (float)acc;
    }
}

extern "C" __global__ void gauss_axis0(float* dst, const float* src, const double* half,
                                       MapsParams p) {
    gauss_line(dst, src, half, p, 0);
}

extern "C" __global__ void gauss_axis1(float* dst, const float* src, const double* half,
                                       MapsParams p) {
    gauss_line(dst, src, half, p, 1);
}
