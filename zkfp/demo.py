"""`zkfp demo`: the whole pipeline on the embedded tiny model, with a short printed summary.

protect → generate with both (agreement, slowdown) → fingerprint the source, the release, an
offspring and an unrelated model → prove the release's fingerprint → verify the bundle against the
release → compare the proven fingerprint with the suspects. Everything is written under `out`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from verifier import VerifyResult

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


def make_relatives(source: Path, out_dir: Path) -> dict[str, Path]:
    """An offspring (the source trained further on other text) and an unrelated model (another seed)."""
    from transformers import AutoModelForCausalLM

    from zkfp.zoo import corpus, embedded, tiny

    offspring = AutoModelForCausalLM.from_pretrained(source)
    tiny.train(offspring, tiny.encode(corpus.generate("harbor", 1500, seed=11)), steps=100, lr=1e-3, seed=11)
    spec = dict(embedded.SPEC)
    unrelated = tiny.build(spec.pop("family"), seed=embedded.SEED + 1, **spec)
    tiny.train(unrelated, tiny.encode(corpus.generate(embedded.DOMAINS, 3000, seed=12)), steps=300, seed=12)
    return {"offspring": tiny.save(offspring, out_dir / "models" / "offspring"),
            "unrelated": tiny.save(unrelated, out_dir / "models" / "unrelated")}


def fingerprint_all(models: dict[str, Path], out_dir: Path) -> dict:
    """Fingerprint every model on one token list; write FP.json + PNG each and a side-by-side sheet."""
    from PIL import Image, ImageDraw

    from fingerprint.extract import extract
    from fingerprint.fpjson import save
    from fingerprint.render import render

    fps, tiles = {}, []
    for name, path in models.items():
        ids = next(iter(fps.values())).token_ids if fps else None
        fps[name] = fp = extract(path, token_ids=ids)
        save(fp, out_dir / f"{name}.fp.json")
        image = render(fp.v)
        image.save(out_dir / f"{name}.png")
        tiles.append((name, image))
    side = tiles[0][1].width
    sheet = Image.new("RGB", (side * len(tiles), side + 24), "white")
    for col, (name, image) in enumerate(tiles):
        sheet.paste(image, (col * side, 24))
        ImageDraw.Draw(sheet).text((col * side + 6, 6), name, fill="black")
    sheet.save(out_dir / "fingerprints.png")
    return fps


def prove_and_verify(release: Path, out_dir: Path, srs: str | None) -> tuple[Path, VerifyResult, dict]:
    """Prove the release's fingerprint (a dev SRS unless a ceremony SRS is given) and verify the
    bundle as a third party would: against the release, with the key derived by the verifier."""
    from prover import prove
    from verifier import verify_bundle

    timings: dict = {}
    bundle = prove(release, out_dir / "bundle", srs=srs, dev_srs=srs is None, force=True, timings=timings)
    t0 = time.perf_counter()
    result = verify_bundle(bundle, release, srs=srs, allow_dev_srs=srs is None)
    timings["verify_s"] = time.perf_counter() - t0
    return bundle, result, timings


def run(out: str, srs: str | None = None) -> int:
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

    from fingerprint.compare import compare

    with _timed("zoo: an offspring (trained further on harbour text) and an unrelated seed twin"):
        relatives = make_relatives(source, out_dir)
    with _timed("fingerprint: source, release, offspring, unrelated"):
        fps = fingerprint_all({"source": source, "release": release, **relatives}, out_dir)
    console.print(f"  images: {out_dir / 'fingerprints.png'}")

    kind = "ceremony SRS " + srs if srs else "a dev SRS (insecure, for demos and tests: its maker can forge proofs)"
    with _timed(f"prove: the release's fingerprint in zero knowledge, with {kind}"):
        bundle, verdict, timings = prove_and_verify(release, out_dir, srs)
    console.print(f"  setup {timings['setup_s']:.0f} s (cached by shape), prove {timings['prove_s']:.0f} s, "
                  f"verify {timings['verify_s']:.1f} s (key {verdict.checks.get('key', '?')}); "
                  f"proven v vs float v cosine {timings['cosine']:.5f}")
    if not verdict.ok:
        console.print(f"[red]  the bundle did not verify: {verdict.reasons[0]}[/red]")
        return 1
    console.print(f"  bundle {bundle}/ verifies against the release: "
                  + ", ".join(k for k, v in verdict.checks.items() if v in ("ok", True, "derived", "cached")))

    from fingerprint.fpjson import load

    proven = load(bundle)
    for name in ("release", "offspring", "unrelated"):
        result = compare(fps["source"], fps[name])
        console.print(f"  source vs {name:<9} similarity {result['similarity']:7.2f}  → {result['verdict']}")
    for name in ("offspring", "unrelated"):
        result = compare(proven, fps[name])
        console.print(f"  proven v vs {name:<9} similarity {result['similarity']:7.2f}  → {result['verdict']} "
                      f"(basis {result['basis']})")
    return 0
