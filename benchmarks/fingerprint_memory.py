"""Time and peak memory of fingerprinting a checkpoint with 7B-shaped tensors, vs the HuRef way.

    python benchmarks/fingerprint_memory.py [--layers 32] [--modes zkfp,huref] [--dir DIR] [--huref-tokens 16]

Writes (once) a Llama checkpoint with Llama-2-7B's tensor shapes (hidden 4096, intermediate
11008, vocab 32000, 32 heads) but only `--layers` blocks, fp16, sharded one file per block,
directly with safetensors. Then measures, each in a fresh process: the import baseline,
`fingerprint.extract` (lazy per-tensor reads, every layer, as the spec reads them; and with the
per-head terms replaced by zeros, to price them in the same run),
`fingerprint.weights.compare_weights` of the checkpoint with itself (both sides read; and with the
whitening replaced by the identity, or the gauge left out, to price each in the same run) and the HuRef
way (load the whole model in fp32 with transformers, then compute the terms of the last two
layers; at 32 layers that is 27 GB, more than this machine holds: run it with fewer layers). Peak RSS is the child's
VmHWM (ru_maxrss would carry the forking parent's peak across exec).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
          "intermediate_size": 11008, "num_attention_heads": 32, "num_key_value_heads": 32,
          "vocab_size": 32000, "rms_norm_eps": 1e-5, "hidden_act": "silu", "max_position_embeddings": 4096,
          "tie_word_embeddings": False, "torch_dtype": "float16", "bos_token_id": 1, "eos_token_id": 2}


def write_checkpoint(out: Path, layers: int) -> Path:
    import torch
    from safetensors.torch import save_file

    if (out / "config.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    d, f, V = 4096, 11008, 32000
    rnd = lambda *s: (torch.randn(*s, generator=g) * 0.02).half()  # noqa: E731
    weight_map = {}

    def put(fname, tensors):
        save_file(tensors, out / fname, metadata={"format": "pt"})
        weight_map.update({k: fname for k in tensors})

    put("embed.safetensors", {"model.embed_tokens.weight": rnd(V, d)})
    for i in range(layers):
        p = f"model.layers.{i}."
        put(f"layer-{i}.safetensors", {
            p + "input_layernorm.weight": (1 + 0.1 * torch.randn(d, generator=g)).half(),
            p + "post_attention_layernorm.weight": (1 + 0.1 * torch.randn(d, generator=g)).half(),
            p + "self_attn.q_proj.weight": rnd(d, d), p + "self_attn.k_proj.weight": rnd(d, d),
            p + "self_attn.v_proj.weight": rnd(d, d), p + "self_attn.o_proj.weight": rnd(d, d),
            p + "mlp.gate_proj.weight": rnd(f, d), p + "mlp.up_proj.weight": rnd(f, d),
            p + "mlp.down_proj.weight": rnd(d, f),
        })
    put("head.safetensors", {"model.norm.weight": torch.ones(d).half(), "lm_head.weight": rnd(V, d)})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (out / "config.json").write_text(json.dumps(dict(CONFIG, num_hidden_layers=layers)))
    return out


CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
mode, path, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
import torch
from fingerprint import extract as E, spec
if mode == "huref":
    import transformers
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
def disk_read_mb():  # bytes this process made the disk read (page-cache hits are not counted)
    for line in open("/proc/self/io"):
        if line.startswith("read_bytes:"):
            return int(line.split()[1]) / 2**20
before = status("VmRSS:")
import threading
peak_anon = [0.0]
def sample():
    while True:
        peak_anon[0] = max(peak_anon[0], status("RssAnon:"))
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
anon_before = status("RssAnon:")
read_before = disk_read_mb()
t = time.time()
if mode.startswith("zkfp"):
    if mode == "zkfp-without-heads":  # the per-head terms replaced by zeros: the baseline that prices them
        from fingerprint import invariants as inv
        inv.head_terms = lambda q, k, v, Wo, X, heads: torch.zeros(heads, 2, len(X), len(X))
    fp = E.extract(path)
elif mode.startswith("weights"):  # fingerprint.weights against itself: both sides read, bases aligned, sketched
    from fingerprint import weights as W
    if mode == "weights-unwhitened":  # the whitening replaced by the identity: the baseline that prices it
        W.whitening = lambda rows: torch.eye(rows.shape[1], dtype=rows.dtype)
    if mode == "weights-without-gauge":  # no gauge features or CKA (the linear assignment stays): prices the gauge
        W.gauge_features = lambda *a: None
        W.gauge_score = lambda *a: 0.0
    W.compare_weights(path, path)
elif mode == "huref":
    from transformers import AutoModelForCausalLM
    from fingerprint.huref import huref_terms
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    sd = model.state_dict()
    ids = spec.select_tokens(32000, k=k)
    X = sd["model.embed_tokens.weight"][ids]
    n = model.config.num_hidden_layers
    terms = []
    with torch.no_grad():
        for i in range(n - 2, n):
            p = f"model.layers.{{i}}."
            w = lambda r: sd[p + r + ".weight"]
            terms.append(huref_terms(X, w("self_attn.q_proj"), w("self_attn.k_proj"), w("self_attn.v_proj"),
                                     w("self_attn.o_proj"), w("mlp.up_proj"), w("mlp.down_proj"),
                                     w("mlp.gate_proj"), 32, 32))
elapsed = time.time() - t
print(json.dumps({{"mode": mode, "seconds": elapsed, "rss_before_mb": before, "anon_before_mb": anon_before, "peak_anon_mb": max(peak_anon[0], status("RssAnon:")),
                  "peak_rss_mb": status("VmHWM:"), "disk_read_mb": disk_read_mb() - read_before}}))
"""


def measure(mode: str, path: Path, k: int) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), mode, str(path), str(k)],
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{mode} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--modes", default="zkfp", help="comma-separated: zkfp, zkfp-without-heads, huref, weights, "
                                                     "weights-unwhitened, weights-without-gauge")
    ap.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "zkfp-7b-shaped"))
    ap.add_argument("--huref-tokens", type=int, default=16, help="tokens for the HuRef run (HuRef uses 4096)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fingerprint_memory.json"))
    args = ap.parse_args(argv)
    t = time.time()
    path = write_checkpoint(Path(args.dir), args.layers)
    size = sum(p.stat().st_size for p in path.glob("*.safetensors"))
    print(f"checkpoint: {path} ({size / 2**30:.2f} GiB fp16, {args.layers} layers, written in {time.time() - t:.0f}s)")
    results = {"checkpoint_gib": size / 2**30, "layers": args.layers}
    modes = args.modes.split(",")
    for mode in modes:
        results[mode] = measure(mode, path, args.huref_tokens)
        print(json.dumps(results[mode]))
    fp32_read = (args.layers * (4 * 4096 * 4096 + 3 * 4096 * 11008)) * 4 / 2**20
    print("\n| method | time (s) | peak RSS (MiB) | above RSS after imports (MiB) | peak anonymous memory above imports (MiB) | read from disk (MiB) |\n|---|---|---|---|---|---|")
    for mode, label in (("zkfp", f"zkfp (lazy, per tensor, all {args.layers} layers)"),
                        ("zkfp-without-heads", "the same with the per-head terms left out"),
                        ("huref", "HuRef way (whole model fp32, last two layers)"),
                        ("weights", f"weights compare (both sides, all {args.layers} layers, sketch r = 256)"),
                        ("weights-unwhitened", "the same with the whitening replaced by the identity")):
        if mode not in results:
            continue
        r = results[mode]
        print(f"| {label} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['rss_before_mb']:.0f} | {r['peak_anon_mb'] - r['anon_before_mb']:.0f} | {r.get('disk_read_mb', float('nan')):.0f} |")
    print(f"(above baseline = peak RSS minus RSS after imports, before the work; the tensors the fingerprint needs are {fp32_read:.0f} MiB in fp32, "
          f"the largest single one {4096 * 11008 * 4 / 2**20:.0f} MiB)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
