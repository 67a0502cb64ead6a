// Device helpers shared by the kernels: warp reductions and the f32 <-> bf16 bit conversions
// (bf16 kept as raw `unsigned short` so that no toolkit header is needed under NVRTC).
#pragma once

#include "params.h"

#define WARP 32

// NVRTC has no math.h: INFINITY from its bits there.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Round to nearest even, as torch's `.to(bfloat16)` and the CPU backend's bf16 path; NaN
// stays a quiet NaN.
__device__ __forceinline__ unsigned short f32_to_bf16_bits(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
