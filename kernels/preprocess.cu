// normalize_rgb: CLIP input normalisation of resized RGB bytes (SPEC §1), on the device
//
//   images[b, c, y, x] = lut[c * 256 + rgb[b, y, x, c]]
//   lut[c * 256 + v]   = (v / 255 - mean[c]) / std[c]
//
// rgb: [batch, height, width, 3] u8 (HWC, as decoded and resized on the host),
// images: [batch, 3, height, width] f32, lut: [3, 256] f32. The table is computed on the host
// by data::preprocess::normalize_lut, the CPU twin's own table, so the two backends give the same
// bits (no device division to differ in rounding). One thread per pixel, grid-stride: it reads
// its 3 bytes and writes one value in each plane (consecutive threads, consecutive addresses).
// CPU twin: data::preprocess::normalize_rgb.
#include "common.cuh"

extern "C" __global__ void normalize_rgb(float* images, const unsigned char* rgb, const float* lut,
                                         PreprocessParams p) {
    __shared__ float table[3 * 256];
    for (int i = threadIdx.x; i < 3 * 256; i += blockDim.x) table[i] = lut[i];
    __syncthreads();
    long long plane = (long long)p.height * p.width;
    long long n = (long long)p.batch * plane;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long b = i / plane;
        const unsigned char* px = rgb + 3 * i;
        float* out = images + 2 * b * plane + i;  // = b * 3 * plane + (i - b * plane)
        out[0] = table[px[0]];
        out[plane] = table[256 + px[1]];
        out[2 * plane] = table[512 + px[2]];
    }
}
