#!/usr/bin/env python3
"""Golden text features for the fixed-prompt ablation (paper Table 4 "Base"): the plain CLIP
token sequence of "a photo of an object without/with defect." (SOT ... EOT, zero-padded to 77,
no learnable vectors before it), the text tower of the tiny zero-shot golden model, ln_final,
the row at argmax(ids) (the EOT, no +12 offset), @ text_projection, L2-normalised.

Run after make_golden.py (reads zero_shot/openai/model.safetensors; writes
zero_shot/fixed_prompts.safetensors, deterministic):

    python3 tests/golden/make_fixed_prompt_golden.py

Outputs: `ids` [2,77] (f32; the token ids, checked against afclip's tokenizer by the test) and
`text_features` [2,64] (normal, abnormal).
"""
import os

import torch
from safetensors.torch import load_file, save_file

from make_golden import CTX, HEAD_DIM, OUT, T_LAYERS, layer_norm, resblock

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

# CLIP BPE: a photo of an object without/with defect .
IDS_NORMAL = [49406, 320, 1125, 539, 550, 14115, 2193, 44013, 269, 49407]
IDS_ABNORMAL = [49406, 320, 1125, 539, 550, 14115, 593, 44013, 269, 49407]


def fixed_text_features(w):
    t = w["positional_embedding"].shape[1]
    mask = torch.full((CTX, CTX), float("-inf")).triu(1)
    ids, outs = [], []
    for seq in (IDS_NORMAL, IDS_ABNORMAL):
        ids_t = torch.tensor(seq + [0] * (CTX - len(seq)), dtype=torch.int64)
        x = (w["token_embedding.weight"][ids_t] + w["positional_embedding"])[None]
        for i in range(T_LAYERS):
            x = resblock(x, w, f"transformer.resblocks.{i}.", t // HEAD_DIM, mask)
        x = layer_norm(x, w["ln_final.weight"], w["ln_final.bias"])
        y = x[0, int(ids_t.argmax())] @ w["text_projection"]
        outs.append(y / y.norm())
        ids.append(ids_t.to(torch.float32))
    return torch.stack(ids), torch.stack(outs)


def main():
    w = load_file(os.path.join(OUT, "openai", "model.safetensors"))
    ids, tf = fixed_text_features(w)
    assert torch.isfinite(tf).all()
    save_file({"ids": ids.contiguous(), "text_features": tf.contiguous()},
              os.path.join(OUT, "fixed_prompts.safetensors"))
    print("fixed prompts: cos(t_n,t_a) =", float(tf[0] @ tf[1]))


if __name__ == "__main__":
    main()
