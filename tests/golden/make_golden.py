#!/usr/bin/env python3
"""Golden fixtures for afclip's zero-shot path: an independent PyTorch reference of
SPEC.md sections 1-6, run on a tiny seeded random CLIP and a random AF-CLIP head.

Run from anywhere (writes next to this file, under zero_shot/):

    python3 tests/golden/make_golden.py

Deterministic: float32 on the CPU, one thread, fixed seeds; rerunning rewrites identical bytes.

Tiny CLIP (OpenAI layout, shapes as real CLIP so a loader can infer sizes from them):
  vision: width d=128, 4 layers, 2 heads, patch 14, trained at 112 px (grid 8, pos [65,128]),
          visual.proj [128,64]
  text:   width t=64, 2 layers, 1 head, context 77, vocab 49408, text_projection [64,64]
Head: state_prompt_embedding [1,12,64], adaptor (LN, q/k/v 128->512, 8 heads of 64, out 512->128).

Every weight is rounded to a value that bf16 AND f16 represent exactly (bf16 rounding, then
|x| < 2^-14 -> 0, where f16 would go subnormal), so the f32, f16 and bf16 copies of a tensor
hold identical values.

Outputs (zero_shot/):
  openai/model.safetensors        all f32, OpenAI names
  hf/model.safetensors            the same values, Hugging Face names, mixed dtypes (see HF_DTYPE)
  hf/config.json                  a minimal CLIPModel config for the tiny model
  head.safetensors                f32 head (names as SPEC section 4/5, prefix adaptor.)
  images/*.png                    3 synthetic inputs (grey L, RGBA, RGB; non-square sizes)
  expected.safetensors            S=98, layers (1,2,3,4): pixels, text_features, layer_features,
                                  probs, image_scores, maps, pos_embedding_interp
  expected_layers_2_4_s84.safetensors   S=84, layers (2,4): probs, image_scores, maps
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from scipy.ndimage import gaussian_filter

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "zero_shot")

# ---------------------------------------------------------------- model sizes
V_WIDTH, V_LAYERS, PATCH, TRAIN_IMG = 128, 4, 14, 112
T_WIDTH, T_LAYERS, CTX, VOCAB = 64, 2, 77, 49408
EMBED = 64
N_PROMPT = 12
ADAPTOR_INNER, ADAPTOR_HEADS = 512, 8
HEAD_DIM = 64
LN_EPS = 1e-5

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

IDS_NORMAL = [49406, 2193, 44013, 269, 49407]    # "without defect."
IDS_ABNORMAL = [49406, 593, 44013, 269, 49407]   # "with defect."

SCALES = (1, 3, 5)
AGG_SIGMA = 4.0
TEMPERATURE = 0.07
MAP_SIGMA = 4
QK_GAIN = 4.0


def exact(x):
    """Round to a value exactly representable in bf16 and in f16 (normal range)."""
    x = x.to(torch.bfloat16).to(torch.float32)
    x = torch.where(x.abs() < 2.0 ** -14, torch.zeros_like(x), x)
    assert torch.equal(x.to(torch.float16).to(torch.float32), x)
    return x.contiguous()


# ---------------------------------------------------------------- weights
def make_clip(gen):
    def normal(shape, std, mean=0.0):
        return exact(torch.randn(shape, generator=gen) * std + mean)

    w = {}

    def block(prefix, d):
        w[prefix + "ln_1.weight"] = normal([d], 0.1, 1.0)
        w[prefix + "ln_1.bias"] = normal([d], 0.05)
        w[prefix + "attn.in_proj_weight"] = normal([3 * d, d], d ** -0.5)
        w[prefix + "attn.in_proj_bias"] = normal([3 * d], 0.05)
        w[prefix + "attn.out_proj.weight"] = normal([d, d], 0.5 * d ** -0.5)
        w[prefix + "attn.out_proj.bias"] = normal([d], 0.05)
        w[prefix + "ln_2.weight"] = normal([d], 0.1, 1.0)
        w[prefix + "ln_2.bias"] = normal([d], 0.05)
        w[prefix + "mlp.c_fc.weight"] = normal([4 * d, d], d ** -0.5)
        w[prefix + "mlp.c_fc.bias"] = normal([4 * d], 0.05)
        w[prefix + "mlp.c_proj.weight"] = normal([d, 4 * d], 0.5 * (4 * d) ** -0.5)
        w[prefix + "mlp.c_proj.bias"] = normal([d], 0.05)

    d = V_WIDTH
    g0 = TRAIN_IMG // PATCH
    w["visual.class_embedding"] = normal([d], 0.5)
    w["visual.positional_embedding"] = normal([g0 * g0 + 1, d], 0.5)
    w["visual.conv1.weight"] = normal([d, 3, PATCH, PATCH], (3 * PATCH * PATCH) ** -0.5)
    w["visual.ln_pre.weight"] = normal([d], 0.1, 1.0)
    w["visual.ln_pre.bias"] = normal([d], 0.05)
    for i in range(V_LAYERS):
        block(f"visual.transformer.resblocks.{i}.", d)
    w["visual.ln_post.weight"] = normal([d], 0.1, 1.0)
    w["visual.ln_post.bias"] = normal([d], 0.05)
    w["visual.proj"] = normal([d, EMBED], d ** -0.5)

    t = T_WIDTH
    tok = torch.zeros(VOCAB, t)
    rows = sorted(set(range(1000)) | set(IDS_NORMAL) | set(IDS_ABNORMAL))
    tok[rows] = torch.randn(len(rows), t, generator=gen) * 0.5
    w["token_embedding.weight"] = exact(tok)
    w["positional_embedding"] = normal([CTX, t], 0.1)
    for i in range(T_LAYERS):
        block(f"transformer.resblocks.{i}.", t)
    w["ln_final.weight"] = normal([t], 0.1, 1.0)
    w["ln_final.bias"] = normal([t], 0.05)
    w["text_projection"] = normal([t, EMBED], t ** -0.5)
    w["logit_scale"] = exact(torch.tensor(float(np.log(1.0 / 0.07)), dtype=torch.float32))
    return w


def make_head(gen):
    d = V_WIDTH

    def uni(shape, fan_in, gain=1.0):
        b = gain * fan_in ** -0.5
        return exact((torch.rand(shape, generator=gen) * 2 - 1) * b)

    h = {}
    h["state_prompt_embedding"] = exact(torch.randn(1, N_PROMPT, T_WIDTH, generator=gen) * 0.5)
    h["adaptor.attention.norm.weight"] = exact(1.0 + 0.1 * torch.randn(d, generator=gen))
    h["adaptor.attention.norm.bias"] = exact(0.05 * torch.randn(d, generator=gen))
    # q and k get QK_GAIN x the torch-default bound: with the default the random adaptor's
    # attention is nearly uniform and every patch gets almost the same probability.
    h["adaptor.attention.attn.to_q.weight"] = uni([ADAPTOR_INNER, d], d, QK_GAIN)
    h["adaptor.attention.attn.to_k.weight"] = uni([ADAPTOR_INNER, d], d, QK_GAIN)
    h["adaptor.attention.attn.to_v.weight"] = uni([ADAPTOR_INNER, d], d)
    h["adaptor.attention.attn.to_out.0.weight"] = uni([d, ADAPTOR_INNER], ADAPTOR_INNER)
    h["adaptor.attention.attn.to_out.0.bias"] = uni([d], ADAPTOR_INNER)
    return h


# ---------------------------------------------------------------- HF naming
HF_BLOCK = {
    "ln_1.weight": "layer_norm1.weight", "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight", "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias",
}
HF_TOP = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}


def hf_dtype(name):
    """dtype of each tensor in hf/model.safetensors."""
    if "norm" in name or name == "logit_scale":      # every LayerNorm (incl. pre_layrnorm)
        return torch.float32
    if ".embeddings.position_embedding" in name or name.startswith("vision_model.embeddings.") \
            or name in ("visual_projection.weight", "text_projection.weight"):
        return torch.float16
    return torch.bfloat16


def to_hf(w):
    out = {}
    for k, v in w.items():
        if k == "visual.proj":
            out["visual_projection.weight"] = v.t().contiguous()
        elif k == "text_projection":
            out["text_projection.weight"] = v.t().contiguous()
        elif k in HF_TOP:
            out[HF_TOP[k]] = v
        else:
            if k.startswith("visual.transformer.resblocks."):
                rest = k[len("visual.transformer.resblocks."):]
                pre = "vision_model.encoder.layers."
            else:
                assert k.startswith("transformer.resblocks."), k
                rest = k[len("transformer.resblocks."):]
                pre = "text_model.encoder.layers."
            i, sub = rest.split(".", 1)
            pre = f"{pre}{i}."
            if sub in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = "weight" if sub.endswith("weight") else "bias"
                q, kk, vv = v.chunk(3, dim=0)
                out[pre + f"self_attn.q_proj.{kind}"] = q.contiguous()
                out[pre + f"self_attn.k_proj.{kind}"] = kk.contiguous()
                out[pre + f"self_attn.v_proj.{kind}"] = vv.contiguous()
            else:
                out[pre + HF_BLOCK[sub]] = v
    out = {k: v.to(hf_dtype(k)) for k, v in out.items()}
    g0 = TRAIN_IMG // PATCH
    out["vision_model.embeddings.position_ids"] = torch.arange(g0 * g0 + 1, dtype=torch.int64)[None]
    out["text_model.embeddings.position_ids"] = torch.arange(CTX, dtype=torch.int64)[None]
    return out


def from_hf(h):
    """Inverse of to_hf (used only to check the mapping)."""
    inv_top = {v: k for k, v in HF_TOP.items()}
    inv_blk = {v: k for k, v in HF_BLOCK.items()}
    w = {}
    for k, v in h.items():
        if k.endswith("position_ids"):
            continue
        v = v.to(torch.float32)
        if k == "visual_projection.weight":
            w["visual.proj"] = v.t().contiguous()
        elif k == "text_projection.weight":
            w["text_projection"] = v.t().contiguous()
        elif k in inv_top:
            w[inv_top[k]] = v
        else:
            tower, _, _, i, sub = k.split(".", 4)
            pre = ("visual.transformer.resblocks." if tower == "vision_model"
                   else "transformer.resblocks.") + i + "."
            if sub.startswith("self_attn.") and sub.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                continue
            w[pre + inv_blk[sub]] = v
    for k in h:
        if ".self_attn.q_proj." in k:
            kind = k.rsplit(".", 1)[1]
            base = k[: -len(f"q_proj.{kind}")]
            tower, _, _, i, _ = k.split(".", 4)
            pre = ("visual.transformer.resblocks." if tower == "vision_model"
                   else "transformer.resblocks.") + i + "."
            cat = torch.cat([h[base + f"{p}_proj.{kind}"].to(torch.float32) for p in "qkv"], 0)
            w[pre + ("attn.in_proj_weight" if kind == "weight" else "attn.in_proj_bias")] = cat
    return w


def hf_config():
    g0 = TRAIN_IMG // PATCH
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "logit_scale_init_value": 2.6592,
        "projection_dim": EMBED,
        "text_config": {
            "model_type": "clip_text_model", "hidden_size": T_WIDTH,
            "intermediate_size": 4 * T_WIDTH, "num_attention_heads": T_WIDTH // 64,
            "num_hidden_layers": T_LAYERS, "max_position_embeddings": CTX,
            "vocab_size": VOCAB, "hidden_act": "quick_gelu", "layer_norm_eps": LN_EPS,
            "projection_dim": EMBED, "bos_token_id": 49406, "eos_token_id": 49407,
            "pad_token_id": 1,
        },
        "vision_config": {
            "model_type": "clip_vision_model", "hidden_size": V_WIDTH,
            "intermediate_size": 4 * V_WIDTH, "num_attention_heads": V_WIDTH // 64,
            "num_hidden_layers": V_LAYERS, "image_size": TRAIN_IMG, "patch_size": PATCH,
            "num_channels": 3, "hidden_act": "quick_gelu", "layer_norm_eps": LN_EPS,
            "projection_dim": EMBED,
        },
        "_comment": f"tiny random CLIP for afclip golden tests; trained grid {g0}",
    }


# ---------------------------------------------------------------- images
def make_images(dirpath):
    rng = np.random.RandomState(1234)
    specs = [("a_grey.png", 150, 120, "L"), ("b_rgba.png", 90, 130, "RGBA"),
             ("c_rgb.png", 200, 200, "RGB")]
    os.makedirs(dirpath, exist_ok=True)
    for k, (name, wdt, hgt, mode) in enumerate(specs):
        yy, xx = np.mgrid[0:hgt, 0:wdt].astype(np.float64)
        chans = []
        for c in range(3):
            fx, fy = rng.uniform(0.05, 0.3, size=2)
            ph = rng.uniform(0, 2 * np.pi)
            tex = 0.5 + 0.25 * np.sin(fx * xx + ph) * np.cos(fy * yy - ph)
            tex += 0.12 * rng.randn(hgt, wdt)
            chans.append(tex)
        img = np.stack(chans, -1)
        # painted blob (a defect): an ellipse of a different colour with a soft edge
        cx, cy = rng.uniform(0.3, 0.7) * wdt, rng.uniform(0.3, 0.7) * hgt
        ax, ay = rng.uniform(0.08, 0.18) * wdt, rng.uniform(0.08, 0.18) * hgt
        rr = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2
        blob = np.clip(1.5 - rr, 0, 1)[..., None]
        colour = rng.uniform(0, 1, size=3)
        img = img * (1 - blob) + colour * blob
        img = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
        if mode == "L":
            pil = Image.fromarray(img.mean(-1).round().astype(np.uint8), "L")
        elif mode == "RGBA":
            alpha = np.clip(255 - 1.5 * xx, 30, 255).round().astype(np.uint8)
            pil = Image.fromarray(np.concatenate([img, alpha[..., None]], -1), "RGBA")
        else:
            pil = Image.fromarray(img, "RGB")
        pil.save(os.path.join(dirpath, name), optimize=False)
    return sorted(s[0] for s in specs)


def load_pixels(paths, S):
    xs = []
    mean = torch.tensor(MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(STD, dtype=torch.float32)[:, None, None]
    for p in paths:
        im = Image.open(p).convert("RGB").resize((S, S), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        x = x.to(torch.float32).div(255.0)          # torchvision ToTensor
        x = (x - mean) / std                         # torchvision Normalize
        xs.append(x)
    return torch.stack(xs)


# ---------------------------------------------------------------- computation
def layer_norm(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, LN_EPS)


def mha(x, wts, prefix, heads, mask=None):
    """OpenAI nn.MultiheadAttention with fused in_proj. x [B,L,d]."""
    B, L, d = x.shape
    qkv = x @ wts[prefix + "in_proj_weight"].t() + wts[prefix + "in_proj_bias"]
    q, k, v = qkv.split(d, dim=-1)
    hd = d // heads
    q = q.reshape(B, L, heads, hd).transpose(1, 2)
    k = k.reshape(B, L, heads, hd).transpose(1, 2)
    v = v.reshape(B, L, heads, hd).transpose(1, 2)
    att = (q @ k.transpose(-1, -2)) * (hd ** -0.5)
    if mask is not None:
        att = att + mask
    att = att.softmax(-1)
    o = (att @ v).transpose(1, 2).reshape(B, L, d)
    return o @ wts[prefix + "out_proj.weight"].t() + wts[prefix + "out_proj.bias"]


def resblock(x, w, prefix, heads, mask=None):
    x = x + mha(layer_norm(x, w[prefix + "ln_1.weight"], w[prefix + "ln_1.bias"]),
                w, prefix + "attn.", heads, mask)
    h = layer_norm(x, w[prefix + "ln_2.weight"], w[prefix + "ln_2.bias"])
    h = h @ w[prefix + "mlp.c_fc.weight"].t() + w[prefix + "mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h)
    h = h @ w[prefix + "mlp.c_proj.weight"].t() + w[prefix + "mlp.c_proj.bias"]
    return x + h


def interp_pos(w, g):
    pos = w["visual.positional_embedding"]
    g0 = int(round((pos.shape[0] - 1) ** 0.5))
    d = pos.shape[1]
    grid = pos[1:].reshape(1, g0, g0, d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(g, g), mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(g * g, d)
    return torch.cat([pos[:1], grid], 0)


def vision_features(w, pixels, layers):
    """Residual streams after the given (1-based) blocks: [len(layers), n, N+1, d]."""
    S = pixels.shape[-1]
    g = S // PATCH
    d = w["visual.class_embedding"].shape[0]
    x = F.conv2d(pixels, w["visual.conv1.weight"], stride=PATCH)       # [n,d,g,g]
    x = x.flatten(2).transpose(1, 2)                                     # [n,N,d] row-major
    cls = w["visual.class_embedding"].expand(x.shape[0], 1, d)
    x = torch.cat([cls, x], 1)
    pos = interp_pos(w, g)
    x = x + pos
    x = layer_norm(x, w["visual.ln_pre.weight"], w["visual.ln_pre.bias"])
    feats = []
    for i in range(max(layers)):
        x = resblock(x, w, f"visual.transformer.resblocks.{i}.", d // HEAD_DIM)
        if (i + 1) in layers:
            feats.append(x)
    return torch.stack(feats), pos


def agg_kernel(r):
    c = torch.arange(r, dtype=torch.float32) - (r // 2)
    k = torch.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * AGG_SIGMA ** 2))
    return k / k.sum()


def aggregate(f, r):
    """f [n,N+1,d] -> same; patches smoothed with the r x r Gaussian, zero padding."""
    if r == 1:
        return f
    n, L, d = f.shape
    g = int(round((L - 1) ** 0.5))
    m = f[:, 1:].transpose(1, 2).reshape(n, d, g, g)
    k = agg_kernel(r)[None, None].expand(d, 1, r, r).contiguous()
    m = F.conv2d(m, k, padding=r // 2, groups=d)
    return torch.cat([f[:, :1], m.reshape(n, d, g * g).transpose(1, 2)], 1)


def adaptor(c, h):
    x = layer_norm(c, h["adaptor.attention.norm.weight"], h["adaptor.attention.norm.bias"])
    n, L, _ = x.shape
    q = x @ h["adaptor.attention.attn.to_q.weight"].t()
    k = x @ h["adaptor.attention.attn.to_k.weight"].t()
    v = x @ h["adaptor.attention.attn.to_v.weight"].t()
    sh = lambda t: t.reshape(n, L, ADAPTOR_HEADS, HEAD_DIM).transpose(1, 2)
    q, k, v = sh(q), sh(k), sh(v)
    att = ((q @ k.transpose(-1, -2)) * (HEAD_DIM ** -0.5)).softmax(-1)
    o = (att @ v).transpose(1, 2).reshape(n, L, ADAPTOR_INNER)
    return o @ h["adaptor.attention.attn.to_out.0.weight"].t() + h["adaptor.attention.attn.to_out.0.bias"]


def text_features(w, h):
    t = w["positional_embedding"].shape[1]
    outs = []
    mask = torch.full((CTX, CTX), float("-inf")).triu(1)
    for ids in (IDS_NORMAL, IDS_ABNORMAL):
        ids_t = torch.tensor(ids + [0] * (CTX - len(ids)), dtype=torch.int64)
        emb = w["token_embedding.weight"][ids_t]                       # [77,t]
        x = torch.cat([h["state_prompt_embedding"][0], emb], 0)[:CTX]   # [77,t]
        x = (x + w["positional_embedding"])[None]
        for i in range(T_LAYERS):
            x = resblock(x, w, f"transformer.resblocks.{i}.", t // HEAD_DIM, mask)
        x = layer_norm(x, w["ln_final.weight"], w["ln_final.bias"])
        eot = N_PROMPT + int(ids_t.argmax())
        y = x[0, eot] @ w["text_projection"]
        outs.append(y / y.norm())
    return torch.stack(outs)


def zero_shot(w, h, pixels, layers, tf):
    feats, pos = vision_features(w, pixels, layers)
    logits = 0
    for f in feats:
        for r in SCALES:
            c = aggregate(f, r)
            z = layer_norm(adaptor(c, h), w["visual.ln_post.weight"], w["visual.ln_post.bias"])
            z = z @ w["visual.proj"]
            z = z / z.norm(dim=-1, keepdim=True)
            logits = logits + (z @ tf.t()) / TEMPERATURE
    probs = logits.softmax(-1)[..., 1]                                   # [n,N+1]
    S = pixels.shape[-1]
    g = S // PATCH
    pm = probs[:, 1:].reshape(-1, 1, g, g)
    up = F.interpolate(pm, size=(S, S), mode="bilinear", align_corners=False)[:, 0]
    maps = np.stack([gaussian_filter(m, sigma=MAP_SIGMA) for m in up.numpy().astype(np.float32)])
    assert maps.dtype == np.float32
    return feats, pos, probs, probs[:, 0].contiguous(), torch.from_numpy(maps)


# ---------------------------------------------------------------- main
def main():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    w = make_clip(gen)
    h = make_head(gen)

    os.makedirs(os.path.join(OUT, "openai"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "hf"), exist_ok=True)
    save_file(w, os.path.join(OUT, "openai", "model.safetensors"))
    save_file(to_hf(w), os.path.join(OUT, "hf", "model.safetensors"))
    with open(os.path.join(OUT, "hf", "config.json"), "w") as fh:
        json.dump(hf_config(), fh, indent=2, sort_keys=True)
        fh.write("\n")
    save_file(h, os.path.join(OUT, "head.safetensors"))

    # the HF file read back and renamed must give the OpenAI tensors bit for bit
    back = from_hf(load_file(os.path.join(OUT, "hf", "model.safetensors")))
    assert sorted(back) == sorted(w), set(back) ^ set(w)
    for k in w:
        assert back[k].shape == w[k].shape and torch.equal(back[k], w[k]), k

    names = make_images(os.path.join(OUT, "images"))
    paths = [os.path.join(OUT, "images", n) for n in names]
    tf = text_features(w, h)

    stats = {}
    for S, layers, fname, full in ((98, (1, 2, 3, 4), "expected.safetensors", True),
                                   (84, (2, 4), "expected_layers_2_4_s84.safetensors", False)):
        pixels = load_pixels(paths, S)
        feats, pos, probs, scores, maps = zero_shot(w, h, pixels, layers, tf)
        out = {"probs": probs.contiguous(), "image_scores": scores, "maps": maps.contiguous()}
        if full:
            out.update(pixels=pixels.contiguous(), text_features=tf.contiguous(),
                       layer_features=feats.contiguous(), pos_embedding_interp=pos.contiguous())
        for v in out.values():
            assert v.dtype == torch.float32 and torch.isfinite(v).all()
        save_file(out, os.path.join(OUT, fname),
                  # one key only: safetensors writes metadata in hash-map order
                  metadata={"golden": f"S={S};layers={','.join(map(str, layers))};"
                                      f"images={','.join(names)}"})
        patch = probs[:, 1:]
        stats[fname] = dict(
            probs_min=probs.min().item(), probs_max=probs.max().item(),
            patch_probs_std=patch.std().item(),
            per_image_patch_std=[round(v, 4) for v in patch.std(1).tolist()],
            image_scores=[round(v, 4) for v in scores.tolist()],
            maps_min=maps.min().item(), maps_max=maps.max().item())
        assert patch.std().item() > 0.02, "degenerate patch probabilities"
        assert min(patch.std(1).tolist()) > 0.02, "degenerate patch probabilities"
    print("text cos(t_n,t_a) =", float(tf[0] @ tf[1]))
    for k, v in stats.items():
        print(k, json.dumps(v))


if __name__ == "__main__":
    main()
