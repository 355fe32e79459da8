"""A seeded generator of simple English-like text in a few distinct domains.

Tiny models trained on it become confident about its regularities (agreement, counting,
fixed phrases), so their greedy continuations are decided by clear logit margins rather than
near-ties, and models trained on different domains drift apart in the way fine-tunes do.
"""

from __future__ import annotations

import itertools
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


# -- a wide-lexicon language ----------------------------------------------------------------------
# The generator above has ~100 words, so a BPE of a few thousand tokens trained on it would keep
# most of its ids untouched (their embedding rows stay at their initial values). The language
# below has several thousand pseudo-words built from syllables, with Zipf-distributed
# frequencies, inflections and a few sentence templates, so that a 4096-token byte-level BPE
# trained on its text uses (nearly) every id, frequent words as whole tokens and the long tail
# as syllable pieces. A "foreign" phonology (Cyrillic letters, other function words) yields text
# whose BPE tokens are disjoint from the base ones above the byte level: material for a
# vocabulary extension.

_PHONOLOGY = {
    "base": {
        "onsets": ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
                   "br", "cl", "dr", "fl", "gr", "kr", "pl", "sh", "st", "th", "tr", "ch", "sk", "sp", ""],
        "vowels": ["a", "e", "i", "o", "u", "ai", "ea", "ou", "y", "io", "ee", "oa"],
        "codas": ["", "", "", "n", "r", "l", "s", "m", "t", "nd", "st", "rk", "x", "ng"],
        "function": {"the": "the", "a": "a", "and": "and", "is": "is", "near": "near", "every": "every",
                     "when": "when", "said": "said that", "of": "of", "with": "with", "at": "at", "to": "to",
                     "not": "does not", "there": "there are", "because": "because"},
        "plural": "s", "past": "ed", "third": "s", "numbers": NUMBERS,
    },
    "foreign": {
        "onsets": ["б", "в", "г", "д", "ж", "з", "к", "л", "м", "н", "п", "р", "с", "т", "ф", "х", "ц", "ч",
                   "ш", "бр", "гл", "др", "кр", "пл", "ст", "тр", "зв", "сл", ""],
        "vowels": ["а", "е", "и", "о", "у", "я", "ю", "ы", "ё", "ой", "ай", "эй"],
        "codas": ["", "", "", "н", "р", "л", "с", "м", "т", "к", "ст", "рж", "й", "нь"],
        "function": {"the": "то", "a": "одна", "and": "и", "is": "есть", "near": "возле", "every": "каждый",
                     "when": "когда", "said": "сказал что", "of": "из", "with": "со", "at": "на", "to": "к",
                     "not": "не", "there": "там", "because": "потому"},
        "plural": "ы", "past": "ла", "third": "ет",
        "numbers": ["нуль", "адин", "два", "три", "чиры", "пять", "шесть", "семь", "восем", "девять", "десять"],
    },
}
# Content words per part of speech (inflections multiply the word forms). Sizes and the Zipf
# exponent were tuned for a 4096-token BPE: with fewer words or a steeper Zipf law, many BPE
# tokens exist only as steps towards frequent whole words and never occur in tokenized text
# (measured on 200k sentences: 6.4k words, s = 1.05: 544 of 3839 ids unused; 25.6k, s = 0.8: 207).
_LEXICON_SIZES = {"noun": 9600, "verb": 5600, "adj": 4400, "place": 2800, "adv": 2000, "name": 1200}
ZIPF_S = 0.8
N_TOPICS = 8


def _zipf_cum(n: int, s: float = ZIPF_S, q: float = 2.7) -> list[float]:
    """Cumulative Zipf–Mandelbrot weights 1/(rank+q)^s: a few very frequent words, a long tail of
    rare ones (cumulative so that each draw is a bisection, not a pass over the lexicon)."""
    return list(itertools.accumulate(1.0 / (r + q) ** s for r in range(n)))


class WideLanguage:
    """A seeded pseudo-language: lexicon (per part of speech, each word assigned to a topic) and
    sampling weights. `lexicon_seed` fixes the words; the phonology ("base" or "foreign") fixes
    the letters and function words."""

    def __init__(self, lexicon_seed: int = 0, phonology: str = "base"):
        if phonology not in _PHONOLOGY:
            raise ValueError(f"unknown phonology {phonology!r}; choose from {sorted(_PHONOLOGY)}")
        self.ph = _PHONOLOGY[phonology]
        rng = random.Random(f"wide-lexicon:{phonology}:{lexicon_seed}")
        taken: set[str] = set(self.ph["function"].values()) | set(self.ph["numbers"])
        self.words: dict[str, list[str]] = {}
        self.topic: dict[str, list[int]] = {}
        for pos, n in _LEXICON_SIZES.items():
            ws: list[str] = []
            while len(ws) < n:
                # Frequent (low-rank) words are short, as in natural languages.
                n_syl = 1 + min(3, int(rng.expovariate(1.0 / (0.6 + 1.6 * len(ws) / n))))
                w = self._word(rng, n_syl)
                if w not in taken:
                    taken.add(w)
                    ws.append(w.capitalize() if pos == "name" else w)
            self.words[pos] = ws
            self.topic[pos] = [rng.randrange(N_TOPICS) for _ in ws]
        # Per (pos, topic): the word indices of that topic, in global rank order, with Zipf weights.
        self._general = {pos: (list(range(len(ws))), _zipf_cum(len(ws))) for pos, ws in self.words.items()}
        self._by_topic = {}
        for pos, ws in self.words.items():
            for t in range(N_TOPICS):
                idx = [i for i in range(len(ws)) if self.topic[pos][i] == t]
                self._by_topic[pos, t] = (idx, _zipf_cum(len(idx)))

    def _word(self, rng: random.Random, n_syl: int) -> str:
        """Syllables onset + vowel (+ coda: always on the last syllable, else 30 %)."""
        ph, out = self.ph, []
        for k in range(n_syl):
            syl = rng.choice(ph["onsets"]) + rng.choice(ph["vowels"])
            if k == n_syl - 1 or rng.random() < 0.3:
                syl += rng.choice(ph["codas"])
            out.append(syl)
        return "".join(out)

    def pick(self, rng: random.Random, pos: str, topic: int) -> str:
        """Half of the content words come from the topic's own vocabulary, half from the general one."""
        idx, w = self._by_topic[pos, topic] if rng.random() < 0.5 else self._general[pos]
        return self.words[pos][rng.choices(idx, cum_weights=w)[0]]

    def sentence(self, rng: random.Random, topic: int) -> str:
        f, ph = self.ph["function"], self.ph
        p = lambda pos: self.pick(rng, pos, topic)  # noqa: E731
        kind = rng.randrange(8)
        if kind == 0:  # agreement: singular subject, third-person verb
            return f"{f['the']} {p('adj')} {p('noun')} {p('verb')}{ph['third']} {f['the']} {p('noun')} {f['near']} {f['the']} {p('place')}."
        if kind == 1:  # plural subject, bare verb, adverb
            n = rng.randrange(2, 11)
            return f"{ph['numbers'][n]} {p('noun')}{ph['plural']} {p('verb')} {p('adv')}."
        if kind == 2:  # copying: the same noun twice
            noun = p("noun")
            return f"{f['a']} {noun} {f['is']} {p('adj')}, {f['and']} {f['the']} {noun} {f['is']} {f['near']} {f['the']} {p('place')}."
        if kind == 3:  # subordinate clause, past tense
            return (f"{f['when']} {f['the']} {p('noun')} {p('verb')}{ph['past']}, {f['the']} {p('noun')}{ph['plural']} "
                    f"{p('verb')} {p('adv')}.")
        if kind == 4:  # names (capitalised tokens) and reported speech
            return f"{p('name')} {f['said']} {f['every']} {p('noun')} {p('verb')}{ph['third']} {f['with']} {p('name')}."
        if kind == 5:  # digits
            return f"{f['there']} {rng.randrange(2, 1000)} {p('noun')}{ph['plural']} {f['at']} {f['the']} {p('place')}."
        if kind == 6:
            return (f"{f['the']} {p('noun')} {f['of']} {f['the']} {p('adj')} {p('place')} {f['not']} {p('verb')} "
                    f"{f['because']} {f['the']} {p('noun')} {p('verb')}{ph['past']}.")
        return f"{f['every']} {p('adj')} {p('noun')} {p('verb')}{ph['third']} {f['to']} {f['the']} {p('place')} {p('adv')}."


# Topic mixes: the base text favours the first topics, "other" domains the last ones.
def _topic_weights(domain: int) -> list[float]:
    if domain == 0:
        return [1.0 / (t + 1) for t in range(N_TOPICS)]
    order = list(range(N_TOPICS))
    random.Random(f"wide-domain:{domain}").shuffle(order)
    w = [0.0] * N_TOPICS
    for rank, t in enumerate(order):
        w[t] = 1.0 / (rank + 1) ** 1.5
    return w


_LANGUAGES: dict[tuple[int, str], WideLanguage] = {}


def generate_wide(n_sentences: int = 20000, seed: int = 0, lexicon_seed: int = 0, domain: int = 0,
                  phonology: str = "base") -> str:
    """Wide-lexicon text, one sentence per line, fully determined by the arguments.

    `lexicon_seed` picks the words; `domain` the topic mix (0: the base mix; another value: a
    different emphasis over the same lexicon, for continued pretraining); `phonology="foreign"`
    gives a language in other letters (for a vocabulary extension). `seed` picks the sentences.
    """
    key = (lexicon_seed, phonology)
    if key not in _LANGUAGES:
        _LANGUAGES[key] = WideLanguage(lexicon_seed, phonology)
    lang = _LANGUAGES[key]
    weights = _topic_weights(domain)
    rng = random.Random(f"wide-text:{seed}:{domain}")
    topics = rng.choices(range(N_TOPICS), weights=weights, k=n_sentences)
    return "\n".join(lang.sentence(rng, t) for t in topics) + "\n"
