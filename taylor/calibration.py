"""Calibration: per neuron, the range of each block's MLP pre-activation over calibration tokens.

The model is run one block at a time, like conversion: a one-block shell of the checkpoint's
architecture (transformers' own modules) embeds the calibration tokens and records what its
block receives (hidden states plus the masks and position embeddings the model computes for
it); then each block's weights are loaded from the safetensors files in turn into that shell
block, which replays the recorded inputs, records the MLP pre-activation (gate projection, or
first projection plus bias) and passes its outputs on to the next block. Peak memory is one
block in fp32 plus the calibration tokens' hidden states, whatever the number of blocks.
"""

from __future__ import annotations

import codecs
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zkfp.architectures import CAUSAL_FAMILIES, ModelReader
from zkfp.checkpoint import Checkpoint
from zkfp.errors import CheckpointError, ZkfpError

CALIB_SEQ_LEN = 128
CALIB_MAX_TOKENS = 16384
CALIB_BATCH = 8
RANDOM_SEED = 4242
# Byte-order marks that name a text file's encoding unambiguously (UTF-32 before UTF-16: its LE
# mark starts with UTF-16's).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


@dataclass
class Calibration:
    """Per-layer, per-neuron min and max of the MLP pre-activation (bias included), fp32."""

    minimum: list[np.ndarray]
    maximum: list[np.ndarray]
    tokens: int
    source: str
    extra: dict = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> None:
        np.savez(path, minimum=np.stack(self.minimum), maximum=np.stack(self.maximum),
                 meta=np.array(json.dumps({"tokens": self.tokens, "source": self.source})))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return cls(list(data["minimum"]), list(data["maximum"]), meta["tokens"], meta["source"])


# ---------------------------------------------------------------------------------------------
# Calibration tokens


def read_calibration_text(path: Path) -> tuple[str, str]:
    """The text of a calibration file and its encoding: UTF-8, or UTF-8/16/32 with a byte-order
    mark. Anything else is refused, naming the first byte that is not UTF-8, rather than guessed."""
    raw = path.read_bytes()
    encoding = next((enc for bom, enc in _BOMS if raw.startswith(bom)), "utf-8")
    if encoding == "utf-8" and b"\x00" in raw:
        raise ZkfpError(f"calibration file {path} holds NUL bytes: UTF-16 or UTF-32 text without a "
                        "byte-order mark? Save it as UTF-8, or give token ids")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ZkfpError(
            f"calibration file {path} is not valid {encoding.upper().replace('-SIG', '')} text (byte "
            f"0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8` "
            "for Latin-1 text) or give token ids") from None
    return text, encoding


def calibration_tokens(model_dir: str | os.PathLike, calibration: str | os.PathLike | None,
                       vocab_size: int, max_tokens: int = CALIB_MAX_TOKENS) -> tuple[torch.Tensor, str]:
    """Token ids for calibration: a token-id file, a text file (checkpoint's tokenizer), or by default
    seeded uniformly random ids over the vocabulary (no tokenizer needed)."""
    model_dir = Path(model_dir)
    if calibration is None:  # no text, no tokenizer: nothing that has to resemble the user's traffic
        ids = torch.randint(0, vocab_size, (max_tokens,), generator=torch.Generator().manual_seed(RANDOM_SEED))
        source = f"uniformly random token ids (seed {RANDOM_SEED})"
    else:
        path = Path(calibration)
        if not path.is_file():
            raise ZkfpError(f"calibration file not found: {path}")
        text, encoding = read_calibration_text(path)
        if not text.strip():
            raise ZkfpError(f"calibration file is empty: {path}")
        ids_list = _parse_ids(text)
        if ids_list is not None:
            if not ids_list:
                raise ZkfpError(f"calibration file holds no token ids: {path}")
            bad = [t for t in ids_list if not 0 <= t < vocab_size]
            if bad:
                raise ZkfpError(f"calibration token id {bad[0]} is outside the vocabulary (size {vocab_size}): {path}")
            ids = torch.tensor(ids_list, dtype=torch.long)
            source = f"token ids from {path.name}"
        else:
            ids = _tokenize(model_dir, text, vocab_size)
            source = f"text from {path.name}" + ("" if encoding == "utf-8" else f" ({encoding.replace('-sig', '')})")
    if ids.numel() < 2:
        raise ZkfpError("calibration needs at least 2 tokens")
    return ids[:max_tokens], source


def _parse_ids(text: str) -> list[int] | None:
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            return None
        flat = [x for row in data for x in (row if isinstance(row, list) else [row])]
        if all(isinstance(x, int) and not isinstance(x, bool) for x in flat):
            return flat
        return None
    parts = stripped.split()
    if parts and all(p.lstrip("-").isdigit() for p in parts):
        return [int(p) for p in parts]
    return None


def _tokenize(model_dir: Path, text: str, vocab_size: int) -> torch.Tensor:
    """Calibration text → ids with the checkpoint's own tokenizer (refused if it has none)."""
    tokenizer = None
    if any((model_dir / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
        except Exception as exc:  # a broken tokenizer is the checkpoint's problem; say so
            raise CheckpointError(f"cannot load the tokenizer of {model_dir}: {exc}") from None
    if tokenizer is None:
        raise ZkfpError(f"calibration text needs a tokenizer, and {model_dir} has none; "
                        "give token ids instead (JSON list or whitespace-separated integers)")
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    return ids % vocab_size


def token_batches(ids: torch.Tensor, seq_len: int, batch: int = CALIB_BATCH) -> list[torch.Tensor]:
    """Sequences of seq_len tokens, `batch` at a time; a shorter last sequence goes in a batch of its own."""
    chunks = list(ids.split(seq_len))
    out = []
    for start in range(0, len(chunks), batch):
        group = chunks[start:start + batch]
        if group[-1].numel() != seq_len and len(group) > 1:
            out.append(torch.stack(group[:-1]))
            group = group[-1:]
        out.append(torch.stack(group))
    return out


# ---------------------------------------------------------------------------------------------
# Running the model one block at a time


class _Captured(Exception):
    """Raised by the shell block's pre-hook once it has recorded its inputs."""


class BlockRunner:
    """Runs a checkpoint's blocks one at a time through a one-block transformers shell."""

    def __init__(self, ckpt: Checkpoint):
        from transformers import AutoConfig, AutoModel

        self.ckpt = ckpt
        self.reader = ModelReader(ckpt, CAUSAL_FAMILIES)
        self.family = self.reader.family
        config = AutoConfig.from_pretrained(ckpt.path)
        config.num_hidden_layers = 1
        # The shell is fed embedding rows read from the checkpoint (inputs_embeds), so its own
        # embedding table can be one row instead of the vocabulary.
        config.vocab_size, config.pad_token_id = 1, None
        self.base = AutoModel.from_config(config, dtype=torch.float32).eval()
        self.block = self.base.get_submodule(self.family.layer.format(i=0).rstrip("."))

    def embed(self, batches: list[torch.Tensor]) -> list[tuple[tuple, dict]]:
        """Per batch, the (args, kwargs) the model passes to its first block; then everything
        of the shell but that block is dropped."""
        self._load_base()
        embedding = self.reader.embedding_key()
        recorded: list[tuple[tuple, dict]] = []

        def record(_module, args, kwargs):
            recorded.append((args, kwargs))
            raise _Captured

        handle = self.block.register_forward_pre_hook(record, with_kwargs=True)
        try:
            with torch.no_grad():
                for ids in batches:
                    rows = self.ckpt.get_rows(embedding, ids.reshape(-1).tolist(), torch.float32)
                    try:
                        self.base(inputs_embeds=rows.reshape(*ids.shape, -1), use_cache=False)
                    except _Captured:
                        pass
        finally:
            handle.remove()
        del self.base
        self.ckpt.close()
        return recorded

    def _load_base(self) -> None:
        """The base model's other non-block tensors (position embeddings, final norm)."""
        block_root = self.family.layer.split("{i}")[0]
        own = {k: v for k, v in self.base.state_dict().items()
               if not k.startswith(block_root) and self.reader.key(k) != self.reader.embedding_key()}
        self._copy_in(own, self.reader.key(""))

    def load_block(self, i: int) -> None:
        """Block i's weights (fp32) into the shell block, one tensor at a time."""
        self._copy_in(self.block.state_dict(), self.reader.key("", i))
        self.ckpt.close()  # unmap the shards read for this block: their pages would stay in our RSS

    def _copy_in(self, own: dict[str, torch.Tensor], prefix: str) -> None:
        missing = [prefix + k for k in own if prefix + k not in self.ckpt]
        if missing:
            raise CheckpointError(f"checkpoint lacks the tensor {missing[0]}")
        with torch.no_grad():
            for k, target in own.items():
                source = self.ckpt.get(prefix + k)
                if tuple(source.shape) != tuple(target.shape):
                    raise CheckpointError(f"tensor {prefix + k} has shape {tuple(source.shape)}, the config "
                                          f"implies {tuple(target.shape)}")
                target.copy_(source)

    def run_block(self, inputs: list[tuple[tuple, dict]]) -> None:
        """Apply the shell block to each recorded input, in place: its output takes the hidden
        states' place (so only one batch is held twice)."""
        with torch.no_grad():
            for j, (args, kwargs) in enumerate(inputs):
                hidden = self.block(*args, **kwargs)
                hidden = hidden[0] if isinstance(hidden, tuple) else hidden
                inputs[j] = ((hidden,) + tuple(args[1:]), kwargs)


def calibrate(model_dir: str | os.PathLike, calibration: str | os.PathLike | None = None,
              max_tokens: int = CALIB_MAX_TOKENS, seq_len: int = CALIB_SEQ_LEN) -> Calibration:
    """Per-neuron min/max of each block's MLP pre-activation over the calibration tokens,
    streamed block by block (see the module docstring)."""
    ckpt = Checkpoint(model_dir)
    runner = BlockRunner(ckpt)
    dims = runner.reader.arch.dims
    ids, source = calibration_tokens(model_dir, calibration, dims.vocab, max_tokens)
    max_pos = ckpt.config.get("max_position_embeddings") or ckpt.config.get("n_positions") or seq_len
    seq_len = max(2, min(seq_len, int(max_pos)))
    inputs = runner.embed(token_batches(ids, seq_len))
    lo, hi = [], []
    mlp_in = runner.block.get_submodule(runner.family.gate or runner.family.up)
    for i in range(dims.layers):
        runner.load_block(i)
        low = torch.full((dims.intermediate,), float("inf"))
        high = torch.full((dims.intermediate,), float("-inf"))

        def record(_module, _inp, out):
            nonlocal low, high
            flat = out.detach().float().reshape(-1, out.shape[-1])
            low, high = torch.minimum(low, flat.amin(0)), torch.maximum(high, flat.amax(0))

        handle = mlp_in.register_forward_hook(record)
        try:
            runner.run_block(inputs)
        finally:
            handle.remove()
        lo.append(low.numpy())
        hi.append(high.numpy())
    return Calibration(lo, hi, int(ids.numel()), source)


__all__ = ["CALIB_MAX_TOKENS", "CALIB_SEQ_LEN", "Calibration", "BlockRunner", "calibrate", "calibration_tokens",
           "read_calibration_text", "token_batches"]
