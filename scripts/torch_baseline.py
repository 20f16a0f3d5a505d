#!/usr/bin/env python3
"""Dense BF16 prefill (and decode) throughput of PyTorch on a preset's real shapes, with random
weights: the baseline `slidesparse run --dtype bf16 --pattern dense` is compared against
(docs/PERFORMANCE.md). Uses transformers' Llama/Qwen2 model with attn_implementation="sdpa" when
transformers is installed, else a plain-PyTorch decoder with the same operations
(F.scaled_dot_product_attention, causal, GQA by repeating K/V heads).

Method as in `slidesparse run`: prefill = B sequences of P tokens in one forward, logits of the
last position only; CUDA events; one warm-up, median of --repeats. Decode: G steps of one token
per sequence with the KV cache (eager, no CUDA graphs).

Usage: python scripts/torch_baseline.py --preset qwen2.5-7b --batch 8 --prompt-len 512 [--gen-len 64]
       [--json FILE]
"""
import argparse
import json
import statistics
import sys

import torch
import torch.nn.functional as F

PRESETS = {  # name: (vocab, hidden, intermediate, layers, heads, kv_heads, head_dim, theta, tied, qkv_bias, arch)
    "llama3.2-1b": (128256, 2048, 8192, 16, 32, 8, 64, 500000.0, True, False, "llama"),
    "llama3.2-3b": (128256, 3072, 8192, 28, 24, 8, 128, 500000.0, True, False, "llama"),
    "llama3.1-8b": (128256, 4096, 14336, 32, 32, 8, 128, 500000.0, False, False, "llama"),
    "qwen2.5-7b": (152064, 3584, 18944, 28, 28, 4, 128, 1000000.0, False, True, "qwen2"),
    "qwen2.5-14b": (152064, 5120, 13824, 48, 40, 8, 128, 1000000.0, False, True, "qwen2"),
}


def hf_model(p):
    import transformers
    vocab, hidden, inter, layers, heads, kv, hd, theta, tied, _, arch = p
    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv, rope_theta=theta, tie_word_embeddings=tied,
                  max_position_embeddings=32768, torch_dtype=torch.bfloat16)
    cfg = (transformers.Qwen2Config(**common) if arch == "qwen2" else transformers.LlamaConfig(head_dim=hd, **common))
    cfg._attn_implementation = "sdpa"
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16,
                                                              attn_implementation="sdpa")
    return model.eval(), f"transformers {transformers.__version__} (sdpa)"


class PlainDecoder(torch.nn.Module):
    """The same computation as the runtime: RMSNorm, fused-free q/k/v/o, RoPE, causal SDPA, SwiGLU."""

    def __init__(self, p):
        super().__init__()
        vocab, hidden, inter, layers, heads, kv, hd, theta, tied, bias, _ = p
        self.heads, self.kv, self.hd = heads, kv, hd
        dev, dt = "cuda", torch.bfloat16
        w = lambda *s: (torch.randn(*s, device=dev, dtype=dt) * 0.02)
        self.embed = w(vocab, hidden)
        self.layers = [dict(q=w(heads * hd, hidden), k=w(kv * hd, hidden), v=w(kv * hd, hidden), o=w(hidden, heads * hd),
                            g=w(inter, hidden), u=w(inter, hidden), d=w(hidden, inter),
                            bq=w(heads * hd) if bias else None, bk=w(kv * hd) if bias else None,
                            bv=w(kv * hd) if bias else None,
                            n1=torch.ones(hidden, device=dev, dtype=dt), n2=torch.ones(hidden, device=dev, dtype=dt))
                       for _ in range(layers)]
        self.norm = torch.ones(hidden, device=dev, dtype=dt)
        self.head = self.embed if tied else w(vocab, hidden)
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, device=dev, dtype=torch.float32) / hd))

    @staticmethod
    def rms(x, g):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * g

    def rope(self, x, pos):
        f = pos[:, None].float() * self.inv_freq[None]
        cos, sin = torch.cat([f.cos(), f.cos()], -1).to(x.dtype), torch.cat([f.sin(), f.sin()], -1).to(x.dtype)
        x1, x2 = x[..., : self.hd // 2], x[..., self.hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def forward(self, ids, cache=None, start=0):
        B, T = ids.shape
        h = self.embed[ids]
        pos = torch.arange(start, start + T, device=ids.device)
        new_cache = []
        for i, L in enumerate(self.layers):
            a = self.rms(h, L["n1"])
            q = F.linear(a, L["q"], L["bq"]).view(B, T, self.heads, self.hd).transpose(1, 2)
            k = F.linear(a, L["k"], L["bk"]).view(B, T, self.kv, self.hd).transpose(1, 2)
            v = F.linear(a, L["v"], L["bv"]).view(B, T, self.kv, self.hd).transpose(1, 2)
            q, k = self.rope(q, pos), self.rope(k, pos)
            if cache is not None:
                k, v = torch.cat([cache[i][0], k], 2), torch.cat([cache[i][1], v], 2)
            new_cache.append((k, v))
            o = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=True)
            h = h + F.linear(o.transpose(1, 2).reshape(B, T, -1), L["o"])
            b = self.rms(h, L["n2"])
            h = h + F.linear(F.silu(F.linear(b, L["g"])) * F.linear(b, L["u"]), L["d"])
        return F.linear(self.rms(h[:, -1:], self.norm), self.head), new_cache


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="qwen2.5-7b", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--gen-len", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--plain", action="store_true", help="use the plain-PyTorch decoder even if transformers exists")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.manual_seed(0)
    p = PRESETS[a.preset]
    impl = None
    if not a.plain:
        try:
            model, impl = hf_model(p)
        except ImportError:
            impl = None
    if impl is None:
        model, impl = PlainDecoder(p), f"plain PyTorch {torch.__version__} (F.scaled_dot_product_attention)"
    ids = torch.randint(0, p[0], (a.batch, a.prompt_len), device="cuda")

    def prefill():
        if isinstance(model, PlainDecoder):
            return model(ids)
        try:
            out = model(ids, use_cache=True, logits_to_keep=1)
        except TypeError:
            out = model(ids, use_cache=True, num_logits_to_keep=1)
        return out.logits, out.past_key_values

    times = []
    with torch.inference_mode():
        for r in range(a.repeats + 1):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            logits, cache = prefill()
            e.record()
            torch.cuda.synchronize()
            if r:
                times.append(s.elapsed_time(e))
        result = {"preset": a.preset, "implementation": impl, "torch": torch.__version__, "batch": a.batch,
                  "prompt_len": a.prompt_len, "gpu": torch.cuda.get_device_name(),
                  "prefill_ms": {"median": statistics.median(times), "min": min(times), "max": max(times)},
                  "prefill_tokens_per_s": a.batch * a.prompt_len / (statistics.median(times) / 1e3)}
        if a.gen_len:
            tok = logits[:, -1].argmax(-1, keepdim=True)
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for i in range(a.gen_len):
                if isinstance(model, PlainDecoder):
                    logits, cache = model(tok, cache, a.prompt_len + i)
                else:
                    out = model(tok, past_key_values=cache, use_cache=True)
                    logits, cache = out.logits, out.past_key_values
                tok = logits[:, -1].argmax(-1, keepdim=True)
            e.record()
            torch.cuda.synchronize()
            ms = s.elapsed_time(e)
            result["decode_ms_per_step"] = ms / a.gen_len
            result["decode_tokens_per_s"] = a.batch * a.gen_len / (ms / 1e3)
    print(json.dumps(result, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
