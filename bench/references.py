"""pcfg.py against the references its speed targets name (README "Speed"), side by side on one machine.

  sampler   our batched top-down sampler (ancestors and span ends included) against a naive recursive
            sampler on nltk's PCFG productions, the shape of the paper's own data code;
  encoder   one training step of our BERT encoder against transformers.BertForMaskedLM of the same size
            (width, heads, layers, feed-forward, positions, vocabulary, dropout), on the same batches,
            with the same optimizer and clipping.

nltk and transformers are not dependencies of the project, so run this in a throwaway environment:

    python -m venv /tmp/refs && /tmp/refs/bin/pip install -r requirements.txt nltk transformers
    /tmp/refs/bin/python bench/references.py --threads 1

Flags are bench/pcfg_bench.py's: pcfg.py's (the cpu mlm preset by default) and --bench_steps. A reference
that is not installed is skipped.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
import pcfg  # noqa: E402  (it pins MKL before torch loads)
import pcfg_bench  # noqa: E402  (bench/ is this file's folder)
import torch
import torch.nn as nn


def nltk_sampler(name):
    """Recursive expansion with nltk productions and np.random.choice, one sentence per call."""
    import nltk
    rules = pcfg.grammar(name)["rules"]
    lines = [f"{lhs} -> " + " | ".join(" ".join(alt) + f" [{p:.3f}]"
                                       for alt, p in zip(alts, pcfg.uniform_probs(len(alts))))
             for lhs, alts in rules.items()]
    lines += [f"{c} -> '{c}' [1.0]" for c in "abc"]
    grammar = nltk.PCFG.fromstring("\n".join(lines))

    def expand(sym, out):
        if isinstance(sym, str):
            out.append(pcfg.TOKENS[sym])
            return
        prods = grammar.productions(lhs=sym)
        prod = prods[np.random.choice(len(prods), p=[p.prob() for p in prods])]
        for child in prod.rhs():
            expand(child, out)
    return lambda: expand(grammar.start(), [])


def hf_step(args, role):
    """A training step of transformers.BertForMaskedLM sized like our `role` encoder."""
    import transformers
    d = (args.teacher_heads if role == "teacher" else args.student_heads) * args.head_dim
    cfg = transformers.BertConfig(vocab_size=pcfg.VOCAB, hidden_size=d, num_hidden_layers=args.layers,
                                  num_attention_heads=d // args.head_dim, intermediate_size=4 * d,
                                  max_position_embeddings=args.max_len, hidden_dropout_prob=args.dropout,
                                  attention_probs_dropout_prob=args.dropout, type_vocab_size=2)
    model = transformers.BertForMaskedLM(cfg).to(args.device)
    opt = pcfg.make_optimizer(model, 1e-3, args)

    def step(b):
        x, km, y = b
        opt.zero_grad(set_to_none=True)
        model(input_ids=x, attention_mask=None if km is None else km.long(), labels=y).loss.backward()
        if args.clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
    label = f"transformers {transformers.__version__} BertForMaskedLM ({getattr(cfg, '_attn_implementation', '')})"
    return step, label


def main(argv=None):
    args = pcfg_bench.parse_args(argv)
    if args.objective != "mlm":
        pcfg.fail("--objective", "the references are masked-LM models; use --objective mlm")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = pcfg_bench.bench_sampler(args)
    try:
        ref = nltk_sampler(args.grammar)
        np.random.seed(5)
        n, t0 = 0, time.time()
        while time.time() - t0 < 2.0:
            ref()
            n += 1
        theirs = n / (time.time() - t0)
        print(f"nltk recursive sampler: {theirs:,.0f} sentences/s -> ours is {ours / theirs:,.0f}x faster")
    except ImportError:
        print("nltk recursive sampler: skipped (nltk is not installed in this Python)")

    sync = (lambda: torch.cuda.synchronize()) if args.device.startswith("cuda") else (lambda: None)
    for role, stream in (("teacher", 1), ("student", 2)):  # each at its own batch (--teacher_batch, --batch)
        batches, tokens_per = pcfg_bench.bench_batches(args, stream)
        model = pcfg.make_model(args, role, 0)
        opt = pcfg.make_optimizer(model, 1e-3, args)
        rate = pcfg_bench.time_train(lambda b: pcfg.train_step(model, opt, 1e-3, *b, clip=args.clip), batches, sync)
        print(f"{role}: ours {rate * tokens_per:,.0f} tokens/s", end="")
        try:
            step, label = hf_step(args, role)
        except ImportError:
            print("; transformers: skipped (not installed in this Python)")
            continue
        theirs = pcfg_bench.time_train(step, batches, sync)
        print(f"; {label} {theirs * tokens_per:,.0f} tokens/s -> ours is {rate / theirs:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
