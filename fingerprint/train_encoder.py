"""Train the small MLP encoder (mlp/1) and write `fingerprint/assets/encoder.safetensors`.

    python -m fingerprint.train_encoder [--steps 1500] [--seed 0] [--out fingerprint/assets/encoder.safetensors]

Seeded, CPU minutes, no data download. Training data are synthetic invariants computed with
the real term functions (fingerprint.invariants) on random tiny "models" (random token rows
and weights, gated or plain MLP, grouped-query attention): a positive is the same model with
its weights perturbed by relative noise 5-60% (a stand-in for fine-tuning), a negative is an
independent model. Loss = HuRef's contrastive loss (positive rate 1.3) + a Gaussianity term
(per-coordinate batch mean 0 / variance 1, and the 1-D Wasserstein distance of the pooled
coordinates to N(0, 1)). The file also stores the seeded Gaussian projection (key `projection`),
the spec's encoder, so both ship together.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from fingerprint import invariants as inv
from fingerprint import spec
from fingerprint.encoder import ASSET, projection_matrix

HIDDEN = 64


def _random_model(gen, d=64, heads=4, kv=2, ffn=160, gated=True):
    hd = d // heads
    r = lambda *s: torch.randn(*s, generator=gen) / s[-1] ** 0.5  # noqa: E731
    return {"q": r(heads * hd, d), "k": r(kv * hd, d), "v": r(kv * hd, d), "o": r(d, heads * hd),
            "up": r(ffn, d), "down": r(d, ffn), "gate": r(ffn, d) if gated else None, "heads": heads, "kv": kv}


def _perturb(m, gen, scale):
    out = dict(m)
    for key in ("q", "k", "v", "o", "up", "down", "gate"):
        if m[key] is not None:
            out[key] = m[key] + scale * m[key].std() * torch.randn(m[key].shape, generator=gen)
    return out


def _features(X, layers) -> torch.Tensor:
    terms = torch.stack([inv.layer_terms(X, m["q"], m["k"], m["v"], m["o"], m["up"], m["down"], m["gate"],
                                         m["heads"], m["kv"]) for m in layers])
    return inv.invariant_vector(terms)


def _triplet(gen, k=spec.K_TOKENS, L=spec.N_LAYERS):
    d = 64
    gated = bool(torch.rand(1, generator=gen) < 0.5)
    X = torch.randn(k, d, generator=gen)
    base = [_random_model(gen, d, gated=gated) for _ in range(L)]
    scale = float(0.05 + 0.55 * torch.rand(1, generator=gen))
    pos = [_perturb(m, gen, scale) for m in base]
    Xp = X + 0.1 * scale * torch.randn(k, d, generator=gen)
    neg = [_random_model(gen, d, gated=gated) for _ in range(L)]
    Xn = torch.randn(k, d, generator=gen)
    return _features(X, base), _features(Xp, pos), _features(Xn, neg)


class MLP(torch.nn.Module):
    def __init__(self, n: int, m: int = spec.M_DIM, hidden: int = HIDDEN):
        super().__init__()
        self.l1, self.l2 = torch.nn.Linear(n, hidden), torch.nn.Linear(hidden, m)

    def forward(self, z):  # batch (B, n) → (B, m), each row z-scored
        y = self.l2(torch.relu(self.l1(z)))
        y = y - y.mean(dim=1, keepdim=True)
        return y / y.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-6)


def train(steps: int = 1500, batch: int = 32, seed: int = 0, lr: float = 2e-3, pool: int = 1024, log=print):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n = spec.invariant_length()
    t0 = time.time()
    data = [torch.stack(t) for t in zip(*[_triplet(gen) for _ in range(pool)])]  # 3 × (pool, n)
    log(f"  {pool} synthetic triplets in {time.time() - t0:.0f}s")
    model = MLP(n)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    quant = torch.distributions.Normal(0, 1).icdf((torch.arange(batch * spec.M_DIM) + 0.5) / (batch * spec.M_DIM))
    for step in range(steps):
        idx = torch.randint(0, pool, (batch,), generator=gen)
        a, p, ng = (model(x[idx]) for x in data)
        cos_p = torch.nn.functional.cosine_similarity(a, p)
        cos_n = torch.nn.functional.cosine_similarity(a, ng)
        contrast = (1.3 * (1 - cos_p) + 0.7 * cos_n.abs()).mean()
        gauss = a.mean(0).pow(2).mean() + (a.var(0) - 1).pow(2).mean() + (a.flatten().sort().values - quant).pow(2).mean()
        loss = contrast + 0.5 * gauss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == steps - 1:
            log(f"  step {step}: loss {loss.item():.4f}  cos+ {cos_p.mean().item():.3f}  |cos-| {cos_n.abs().mean().item():.3f}")
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="train the mlp/1 fingerprint encoder (CPU, seeded)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ASSET))
    args = ap.parse_args(argv)
    from safetensors.torch import save_file

    model = train(steps=args.steps, seed=args.seed)
    n = spec.invariant_length()
    tensors = {"projection": projection_matrix(n).contiguous(),
               "mlp.w1": model.l1.weight.detach().contiguous(), "mlp.b1": model.l1.bias.detach().contiguous(),
               "mlp.w2": model.l2.weight.detach().contiguous(), "mlp.b2": model.l2.bias.detach().contiguous()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, args.out, metadata={"spec": spec.SPEC_VERSION, "seed": str(args.seed), "steps": str(args.steps)})
    params = sum(t.numel() for k, t in tensors.items() if k.startswith("mlp."))
    print(f"wrote {args.out} (mlp/1: {params} parameters; projection {tuple(tensors['projection'].shape)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
