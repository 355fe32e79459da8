"""`zkfp demo`: the whole pipeline on the embedded tiny model, with a short printed summary.

protect → generate with both (agreement, slowdown) → fingerprint the source, the release, an
offspring and an unrelated model → prove → verify → compare. Everything is written under `out`.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

console = Console()

PROMPTS = ["the quiet fox", "two plus three is", "count: four", "a baker is", "at the meadow, every",
           "the old owl watches", "one plus one is", "a kettle is warm, and"]


def _timed(label: str):
    class _Step:
        def __enter__(self):
            self.t0 = time.perf_counter()
            console.print(f"[bold]•[/bold] {label} …")
            return self

        def __exit__(self, *exc):
            self.seconds = time.perf_counter() - self.t0
            if exc[0] is None:
                console.print(f"  done in {self.seconds:.1f} s")

    return _Step()


def _greedy(model, ids, new_tokens: int):
    import torch

    with torch.no_grad():
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=0)
        return out[0, ids.shape[1]:].tolist(), time.perf_counter() - t0


def compare_generation(source: Path, release: Path, new_tokens: int = 32) -> dict:
    """Greedy agreement and per-token slowdown of the release against its source, same prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from taylor import load_release

    tok = AutoTokenizer.from_pretrained(source)
    original = AutoModelForCausalLM.from_pretrained(source).eval()
    protected = load_release(release).eval()
    agree = total = 0
    t_orig = t_prot = 0.0
    example = None
    for prompt in PROMPTS:
        ids = torch.tensor([tok(prompt)["input_ids"]])
        a, ta = _greedy(original, ids, new_tokens)
        b, tb = _greedy(protected, ids, new_tokens)
        agree += sum(x == y for x, y in zip(a, b))
        total += len(a)
        t_orig, t_prot = t_orig + ta, t_prot + tb
        example = example or (prompt, tok.decode(b))
    return {"agreement": agree / total, "tokens": total, "slowdown": t_prot / t_orig,
            "ms_per_token_original": 1000 * t_orig / total, "ms_per_token_release": 1000 * t_prot / total,
            "example": example}


def run(out: str) -> int:
    from transformers.utils import logging as hf_logging

    from taylor import protect
    from zkfp.zoo import embedded

    hf_logging.disable_progress_bar()

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = embedded.path()
    console.print(f"[bold]zkfp demo[/bold] on the embedded tiny Llama ({source.name}); outputs in {out_dir}/")

    with _timed("protect: Taylor-expand the MLPs into a release"):
        release = protect(source, out_dir / "release", force=True)
    with _timed("generate: greedy decoding with the original and the release"):
        gen = compare_generation(source, release)
    prompt, continuation = gen["example"]
    console.print(f"  «{prompt}» → «{continuation.strip()}»")
    console.print(f"  agreement {100 * gen['agreement']:.1f} % of {gen['tokens']} tokens; "
                  f"{gen['ms_per_token_original']:.2f} → {gen['ms_per_token_release']:.2f} ms/token "
                  f"(slowdown ×{gen['slowdown']:.1f})")
    return 0
