"""The shipped byte-level BPE tokenizer of the tiny models (built once by `build_tokenizer`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

ASSET = Path(__file__).resolve().parent.parent / "assets" / "tokenizer.json"
VOCAB_SIZE = 512


def build_tokenizer(path: Path = ASSET) -> None:
    """Train the BPE on all corpus domains and write `tokenizer.json` (run once; the file is shipped)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from zkfp.zoo.corpus import DOMAINS, generate

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    text = generate(sorted(DOMAINS), n_sentences=20000, seed=1234)
    tok.train_from_iterator(text.splitlines(), trainer=trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))


def load_tokenizer():
    """The tiny models' tokenizer as a transformers `PreTrainedTokenizerFast`."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(ASSET), eos_token="<|endoftext|>", pad_token="<|endoftext|>")


# -- tokenizers trained for the evaluation zoo ------------------------------------------------------
EOS = "<|endoftext|>"


def train_bpe(text_lines, vocab_size: int = 4096):
    """A byte-level BPE (as `build_tokenizer`: id 0 is <|endoftext|>, ids 1..256 the bytes) trained on
    `text_lines`; returns a `tokenizers.Tokenizer`. Deterministic for a given text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(text_lines), trainer=trainer)
    return tok


def extend_bpe(base, foreign_lines, n_new: int):
    """`base` with exactly `n_new` tokens appended (ids len(base)..len(base)+n_new−1), learnt on
    `foreign_lines`: the recipe of real vocabulary extensions (train a tokenizer on the new
    language, append its tokens the base lacks, keep every base id). The foreign BPE's merges are
    appended after the base's, in their own order, so base text tokenizes exactly as before; a
    foreign merge is kept only when both its parts already exist, so the merge list stays valid.
    """
    import json

    from tokenizers import Tokenizer

    spec = json.loads(base.to_str())
    vocab: dict[str, int] = dict(spec["model"]["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]
    base_size = len(vocab) + sum(1 for t in spec.get("added_tokens", []) if t["content"] not in vocab)
    # Train the foreign BPE larger than needed: some of its tokens already exist in the base.
    for extra in (2, 4, 8):
        foreign = json.loads(train_bpe(foreign_lines, vocab_size=257 + extra * n_new).to_str())["model"]
        added: list[tuple[str, str]] = []
        have = set(vocab)
        for m in foreign["merges"]:
            a, b = m.split(" ") if isinstance(m, str) else m
            if a + b not in have and a in have and b in have:
                added.append((a, b))
                have.add(a + b)
                if len(added) == n_new:
                    break
        if len(added) == n_new:
            break
    else:
        raise ValueError(f"the foreign text yields only {len(added)} new tokens, fewer than {n_new}")
    for k, (a, b) in enumerate(added):
        vocab[a + b] = base_size + k
    spec["model"]["vocab"] = vocab
    spec["model"]["merges"] = [list(m) for m in merges + added]
    return Tokenizer.from_str(json.dumps(spec))


def as_transformers(tok):
    """A `tokenizers.Tokenizer` as a transformers `PreTrainedTokenizerFast` (save_pretrained-able)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)


def save_tokenizer(tok, out_dir) -> Path:
    """Write `tok` to `out_dir` as a transformers tokenizer (tokenizer.json + its config)."""
    out = Path(out_dir)
    as_transformers(tok).save_pretrained(out)
    return out


def merge_parents(tok) -> np.ndarray:
    """(vocab, 2) array: the two ids each merged token was made from (−1 for bytes and specials)."""
    import json

    import numpy as np

    model = json.loads(tok.to_str())["model"]
    vocab = model["vocab"]
    parents = np.full((tok.get_vocab_size(), 2), -1, dtype=np.int64)
    for m in model["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        parents[vocab[a + b]] = (vocab[a], vocab[b])
    return parents


def encode_lines(tok, lines, unmerge_p: float = 0.0, seed: int = 0) -> np.ndarray:
    """Token ids of `lines` (each followed by a newline), concatenated.

    With `unmerge_p` > 0, each token is split back into the two tokens its merge was made from
    with probability `unmerge_p`, recursively: a deterministic, seeded variant of BPE-dropout
    (Provilkov et al., 2020) that keeps the text (decoding is unchanged) but makes tokens which
    BPE only uses as steps towards longer ones (e.g. the inside of a frequent word) occur in the
    training stream, so their embedding rows are trained rather than left at initialisation.
    """
    import numpy as np

    ids = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in tok.encode_batch([ln + "\n" for ln in lines])])
    if unmerge_p <= 0:
        return ids
    parents = merge_parents(tok)
    rng = np.random.default_rng(seed)
    fresh = np.ones(len(ids), dtype=bool)  # tokens not yet offered a split
    while fresh.any():
        split = fresh & (parents[ids, 0] >= 0) & (rng.random(len(ids)) < unmerge_p)
        if not split.any():
            break
        counts = 1 + split
        start = np.cumsum(counts) - counts
        out = np.repeat(ids, counts)
        new_fresh = np.zeros(len(out), dtype=bool)
        s = start[split]
        out[s], out[s + 1] = parents[ids[split], 0], parents[ids[split], 1]
        new_fresh[s] = new_fresh[s + 1] = True
        ids, fresh = out, new_fresh
    return ids
