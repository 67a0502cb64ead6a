#!/usr/bin/env python3
"""Convert the AF-CLIP authors' released head into an afclip head file.

The authors publish two files per training set:
  *_prompt.pt   the learnable state prompt, [1, 12, t] (a tensor, a Parameter, or a dict
                holding one)
  *_adaptor.pt  the adaptor, pickled as a whole torch module
The adaptor's classes live in the authors' code base, which need not be installed: the
unpickler below stands in a plain container for any class it cannot import and reads the
parameters out of the module tree, so the conversion works with torch alone.

Usage:
  python3 tools/convert_official_head.py PROMPT.pt ADAPTOR.pt OUT.safetensors

The output holds `state_prompt_embedding` and `adaptor.attention.norm.{weight,bias}`,
`adaptor.attention.attn.to_{q,k,v}.weight`, `adaptor.attention.attn.to_out.0.{weight,bias}`
(float32), the names `afclip --head` reads. Requires torch and safetensors.
"""
import pickle
import sys
from collections import OrderedDict

import torch
from safetensors.torch import save_file

ADAPTOR_KEYS = [
    "attention.norm.weight",
    "attention.norm.bias",
    "attention.attn.to_q.weight",
    "attention.attn.to_k.weight",
    "attention.attn.to_v.weight",
    "attention.attn.to_out.0.weight",
    "attention.attn.to_out.0.bias",
]


class Placeholder:
    """Stands in for a class of the authors' code: keeps whatever state it is given."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state


class LenientUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (Placeholder,), {"__module__": module})


class LenientPickle:
    Unpickler = LenientUnpickler
    load = pickle.load
    loads = pickle.loads


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=LenientPickle)


def module_tensors(obj, prefix=""):
    """Parameters and buffers of a (possibly placeholder) module tree, by dotted name."""
    out = OrderedDict()
    if isinstance(obj, torch.nn.Module):
        return OrderedDict((prefix + k, v) for k, v in obj.state_dict().items())
    state = getattr(obj, "__dict__", {})
    for group in ("_parameters", "_buffers"):
        for k, v in (state.get(group) or {}).items():
            if v is not None:
                out[prefix + k] = v
    for k, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(module_tensors(child, f"{prefix}{k}."))
    return out


def adaptor_tensors(obj):
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        tensors = OrderedDict(obj)
    else:
        tensors = module_tensors(obj)
    # Accept names with or without a leading "adaptor." / "module." prefix.
    found = {}
    for key in ADAPTOR_KEYS:
        hits = [v for k, v in tensors.items() if k == key or k.endswith("." + key)]
        if len(hits) != 1:
            sys.exit(f"adaptor: expected exactly one tensor named *{key}, found {len(hits)} "
                     f"(tensors present: {', '.join(tensors) or 'none'})")
        found["adaptor." + key] = hits[0]
    return found


def prompt_tensor(obj):
    if isinstance(obj, torch.Tensor):
        t = obj
    elif isinstance(obj, dict):
        hits = [v for k, v in obj.items() if isinstance(v, torch.Tensor) and "prompt" in k]
        if len(hits) != 1:
            hits = [v for v in obj.values() if isinstance(v, torch.Tensor)]
        if len(hits) != 1:
            sys.exit(f"prompt: cannot tell which tensor is the prompt among {list(obj)}")
        t = hits[0]
    else:
        tensors = list(module_tensors(obj).values())
        if len(tensors) != 1:
            sys.exit("prompt: expected one tensor in the prompt file")
        t = tensors[0]
    t = t.detach().reshape(-1, t.shape[-1])
    if t.shape[0] != 12:
        sys.exit(f"prompt: expected 12 prompt vectors, found shape {list(t.shape)}")
    return t.unsqueeze(0)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    prompt_path, adaptor_path, out_path = sys.argv[1:]
    tensors = {"state_prompt_embedding": prompt_tensor(load(prompt_path))}
    tensors.update(adaptor_tensors(load(adaptor_path)))
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}
    d = tensors["adaptor.attention.norm.weight"].shape[0]
    print(f"vision width {d}, text width {tensors['state_prompt_embedding'].shape[-1]}, "
          f"{sum(v.numel() for v in tensors.values())} parameters")
    save_file(tensors, out_path)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
