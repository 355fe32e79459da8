"""A seeded generator of simple English-like text in a few distinct domains.

Tiny models trained on it become confident about its regularities (agreement, counting,
fixed phrases), so their greedy continuations are decided by clear logit margins rather than
near-ties, and models trained on different domains drift apart in the way fine-tunes do.
"""

from __future__ import annotations

import random

DOMAINS: dict[str, dict[str, list[str]]] = {
    "forest": {
        "noun": ["fox", "owl", "deer", "badger", "hare", "wolf", "beetle", "sparrow", "oak", "fern"],
        "place": ["river", "hill", "meadow", "hollow", "creek", "ridge", "glade"],
        "verb": ["watches", "follows", "finds", "hides from", "greets", "chases", "avoids"],
        "adj": ["quiet", "old", "quick", "grey", "small", "clever", "tired"],
    },
    "kitchen": {
        "noun": ["baker", "cook", "kettle", "onion", "loaf", "pepper", "spoon", "tomato", "oven", "knife"],
        "place": ["table", "shelf", "stove", "market", "pantry", "window"],
        "verb": ["slices", "stirs", "bakes", "carries", "washes", "seasons", "serves"],
        "adj": ["warm", "fresh", "heavy", "sweet", "bitter", "golden", "clean"],
    },
    "harbor": {
        "noun": ["sailor", "ship", "gull", "anchor", "captain", "net", "crab", "lantern", "rope", "buoy"],
        "place": ["dock", "pier", "bay", "lighthouse", "shore", "reef"],
        "verb": ["pulls", "mends", "spots", "ties", "loads", "signals", "steers"],
        "adj": ["salty", "rusty", "bright", "wet", "distant", "loud", "calm"],
    },
}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _sentence(rng: random.Random, words: dict[str, list[str]]) -> str:
    kind = rng.randrange(5)
    n, p, v, a = words["noun"], words["place"], words["verb"], words["adj"]
    if kind == 0:
        return f"the {rng.choice(a)} {rng.choice(n)} {rng.choice(v)} the {rng.choice(n)} by the {rng.choice(p)}."
    if kind == 1:
        x, y = rng.randrange(6), rng.randrange(5)
        return f"{NUMBERS[x]} plus {NUMBERS[y]} is {NUMBERS[x + y]}."
    if kind == 2:
        start = rng.randrange(6)
        return "count: " + " ".join(NUMBERS[start : start + 5]) + "."
    if kind == 3:
        noun = rng.choice(n)
        return f"a {noun} is {rng.choice(a)}, and the {noun} stays near the {rng.choice(p)}."
    return f"at the {rng.choice(p)}, every {rng.choice(n)} {rng.choice(v)} a {rng.choice(a)} {rng.choice(n)}."


def generate(domain: str | list[str] = "forest", n_sentences: int = 2000, seed: int = 0) -> str:
    """Text from one domain (or a mix), one sentence per line, fully determined by `seed`."""
    domains = [domain] if isinstance(domain, str) else list(domain)
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise ValueError(f"unknown corpus domain(s) {unknown}; choose from {sorted(DOMAINS)}")
    rng = random.Random(seed)
    return "\n".join(_sentence(rng, DOMAINS[rng.choice(domains)]) for _ in range(n_sentences)) + "\n"
