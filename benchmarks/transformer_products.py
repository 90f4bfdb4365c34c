"""A Hessian-vector product of a small Hugging Face GPT-2 against a gradient, landscope vs plain autograd.

Random-init ``GPT2LMHeadModel`` (default SDPA attention, dropout 0.1 left configured), a dict
batch with padding and ``labels``, the model's own ``.loss``. Timed, one torch thread, median of
the repetitions after a warm-up:

* a gradient: forward + ``loss.backward()`` (what a training step costs, without the update);
* landscope: ``HessianOperator(model, data=batch).matvec(v)`` with the linearisation cached (one
  reverse pass through the kept graph per product), and the same including the linearisation;
* plain autograd double backward (``create_graph=True`` gradient, then ``autograd.grad`` of
  ``g·v``), under the math attention kernel: what a user would write by hand.

    .venv/bin/python benchmarks/transformer_products.py [--reps 10]

Writes results/transformer_products.{json,md}. Needs ``transformers`` (the ``monitor`` extra).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from machine import cpu_name, markdown_table, median_time, write_results
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import GPT2Config, GPT2LMHeadModel

import landscope as ls

RESULTS = Path(__file__).parent / "results"
SIZES = {
    "gpt2-tiny": dict(n_layer=2, n_head=2, n_embd=32, vocab_size=64, n_positions=32),
    "gpt2-small-ish": dict(n_layer=4, n_head=4, n_embd=128, vocab_size=512, n_positions=64),
}


def batch_for(cfg: GPT2Config, n: int, seq: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (n, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[::2, 3 * seq // 4 :] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def measure(name: str, reps: int) -> dict:
    torch.manual_seed(0)
    cfg = GPT2Config(**SIZES[name], bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    model.train()
    batch = batch_for(cfg, 8, min(32, cfg.n_positions))
    params = list(model.parameters())
    dim = sum(p.numel() for p in params)
    v = torch.randn(dim, generator=torch.Generator().manual_seed(1))

    def gradient() -> None:
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()

    op = ls.HessianOperator(model, data=batch)

    def landscope_cached() -> None:
        op.matvec(v)

    def landscope_fresh() -> None:
        op.clear_cache()
        op.matvec(v)

    vs = torch.split(v, [p.numel() for p in params])

    def autograd_hvp() -> None:
        was = model.training
        model.eval()
        try:
            with sdpa_kernel([SDPBackend.MATH]):
                g = torch.autograd.grad(model(**batch).loss, params, create_graph=True)
                dot = sum((gi * vi.view_as(gi)).sum() for gi, vi in zip(g, vs, strict=True))
                torch.autograd.grad(dot, params)
        finally:
            model.train(was)

    t_grad = median_time(gradient, reps)
    out = {"dim": dim, "tokens": int(batch["attention_mask"].sum()), "gradient_s": t_grad}
    for key, fn in (
        ("landscope_cached", landscope_cached),
        ("landscope_with_linearisation", landscope_fresh),
        ("autograd_double_backward", autograd_hvp),
    ):
        t = median_time(fn, reps)
        out[key] = {"seconds": t, "ratio_to_gradient": t / t_grad}
    model.zero_grad(set_to_none=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    doc = {
        "machine": {
            "cpu": cpu_name(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": 1,
        },
        "models": {},
    }
    rows = []
    for name in SIZES:
        r = measure(name, args.reps)
        doc["models"][name] = r
        rows.append(
            [
                name,
                str(r["dim"]),
                f"{1e3 * r['gradient_s']:.2f}",
                *(
                    f"{1e3 * r[k]['seconds']:.2f} ({r[k]['ratio_to_gradient']:.2f}×)"
                    for k in ("landscope_cached", "landscope_with_linearisation", "autograd_double_backward")
                ),
            ]
        )
        print(" | ".join(rows[-1]), flush=True)
    md = [
        "# A Hessian-vector product of Hugging Face GPT-2 against a gradient",
        "",
        f"{doc['machine']['cpu']}, one torch thread, median of {args.reps}; batch of 8 sequences of 32 "
        "tokens with padding, the model's own `.loss`; `python benchmarks/transformer_products.py`. "
        "Milliseconds, and in brackets the ratio to a gradient (forward + backward).",
        "",
        *markdown_table(
            [
                "model",
                "parameters",
                "gradient",
                "landscope product (cached)",
                "landscope product + linearisation",
                "autograd double backward",
            ],
            rows,
        ),
    ]
    write_results(RESULTS, "transformer_products", doc, md)


if __name__ == "__main__":
    main()
