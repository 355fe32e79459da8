"""The shipped byte-level BPE tokenizer of the tiny models (built once by `build_tokenizer`)."""

from __future__ import annotations

from pathlib import Path

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
