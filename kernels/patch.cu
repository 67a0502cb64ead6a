// Patch embedding glue (the embedding GEMM itself is `linear`; CPU twin src/backend/cpu/patch.rs)
//
//   patch_im2col: images [batch, 3, S, S] -> cols [batch, g*g, 3*p*p], g = S / p;
//                 cols[b, h*g + w, (c*p + i)*p + j] = images[b, c, h*p + i, w*p + j]
//   embed_tokens: x [batch, 1 + n, dim];  x[b, 0] = cls + pos[0],
//                 x[b, 1 + t] = patches[b, t] + pos[1 + t]   (patches [batch, n, dim])
//
// One thread per output element, grid-stride loops.
#include "common.cuh"

extern "C" __global__ void patch_im2col(float* cols, const float* images, PatchParams p) {
    int row = 3 * p.patch * p.patch;
    long long n = (long long)p.batch * p.grid * p.grid * row;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x) {
        int col = (int)(e % row);
        long long t = e / row;
        int w = (int)(t % p.grid);
        int h = (int)((t / p.grid) % p.grid);
        long long b = t / ((long long)p.grid * p.grid);
        int j = col % p.patch;
        int i = (col / p.patch) % p.patch;
        int c = col / (p.patch * p.patch);
        cols[e] = images[((b * 3 + c) * p.side + (long long)h * p.patch + i) * p.side +
                         (long long)w * p.patch + j];
    }
}

extern "C" __global__ void embed_tokens(float* x, const float* patches, const float* cls,
                                        const float* pos, EmbedParams p) {
    long long tokens = p.n_patches + 1;
    long long n = (long long)p.batch * tokens * p.dim;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x) {
        long long d = e % p.dim;
        long long t = (e / p.dim) % tokens;
        long long b = e / (tokens * p.dim);
        float v = t == 0 ? cls[d] : patches[(b * p.n_patches + t - 1) * p.dim + d];
        x[e] = v + pos[t * p.dim + d];
    }
}
