"""PCFG: BERT-style masked prediction with progressive distillation, n-gram and non-terminal probes (Sec. 4).

A wide BERT teacher learns masked-token prediction on sentences of a context-free grammar (cfg3b/f/g/h/i of
Allen-Zhu & Li). Its validation loss has three phases: a plateau, a sharp drop and a slow decay. During the
drop its predictions lean on short n-grams (M_robust of the 3-gram spikes): an implicit curriculum that a
small student gets from the teacher's intermediate checkpoints (progressive distillation) and not from the
final teacher alone (one-shot) or from labels (CE). This script regenerates:
  Fig. 1 right        masked-token accuracy of CE, one-shot, progressive students and the teacher per budget;
  curriculum figure   teacher loss with its three phases and checkpoints, median M_robust of the 3-gram,
                      and (2,T)-progressive accuracy against the stage-1 checkpoint (Sec. 4.2, Fig. 4);
  probes              M_robust / M_close for 3-, 5-, 4-, 2-gram windows and the non-terminal probe per depth;
  --objective boundary  the GPT-style variant: a causal model predicts the tokens that close the span of a
                      non-terminal at depth --level (paper Sec. 4, autoregressive experiments).

    python pcfg.py                                   # the whole CPU study (masked prediction)
    python pcfg.py --objective boundary              # the autoregressive variant on CPU
    python pcfg.py --preset paper --device cuda      # the paper's settings (GPU)
    python pcfg.py --mode progressive --teacher_dir out/pcfg/cpu-mlm-all --budgets 600

To copy: this file plus common.py; needs torch, numpy and matplotlib.
"""
import argparse
import math
import os
import sys
import time
from collections import OrderedDict
from functools import lru_cache

import numpy as np

import common  # first: it pins MKL before torch loads
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import fail

# ----------------------------------------------------------------------------------------------------
# 0. Presets. Any flag given on the command line overrides these.

PAPER_GRID = "1e-2,7.5e-3,5e-3,2.5e-3,1e-3"
_PAPER = dict(  # the official code: HF BERT, 512 x full sentences, AdamW (0.9, 0.95), cosine, 6% warmup
    crop=0, subtree=0, max_len=1024, layers=4, head_dim=8, teacher_heads=32, student_heads=8, dropout=0.1,
    batch=512, teacher_batch=512, teacher_lr=5e-3, lr_grid=PAPER_GRID, warmup=0.06, schedule="cosine",
    teacher_schedule="cosine", clip=1.0, temperature=1e-20, eval_size=4096, eval_every=200, probe_size=1024,
    probe_positions="30,60,90,120,150,180,210,240,270,300,330,360,390,420", nt_train=10240, nt_eval=4096)
PRESETS = {
    ("paper", "mlm"): dict(_PAPER, grammar="cfg3b", teacher_steps=16000, budgets="2000,4000,8000,16000",
                           ckpt_every=200, refresh=1000, speed=1.0, level="3", workers=1,
                           methods="ce,oneshot,progressive,two_shot", two_shot_sweep="auto"),
    ("paper", "boundary"): dict(_PAPER, grammar="cfg3f", teacher_steps=2000, budgets="1000", ckpt_every=200,
                                refresh=200, speed=2.0, level="1,2,3", workers=1, methods="ce,oneshot,progressive",
                                two_shot_sweep="none"),
    # Measured on 2 CPU cores (README "Presets"): whole depth-2 subtrees (35-72 tokens) keep the plateau and
    # the distillation gain and let M_robust fall; 32-token crops (README) never let it fall. A teacher batch of
    # 256 (the paper's is 512) brings the M_robust peak into the drop on three teacher seeds of four (batch 64:
    # on none of two); the progressive refresh sits at that teacher's inflection (our rule, README).
    ("cpu", "mlm"): dict(
        grammar="cfg3b", crop=0, subtree=2, max_len=73, layers=4, head_dim=8, teacher_heads=16, student_heads=4,
        dropout=0.0, batch=64, teacher_batch=256, teacher_lr=3e-3, lr_grid="1e-2", warmup=0.06, schedule="cosine",
        teacher_schedule="cosine", clip=1.0, temperature=1e-20, teacher_steps=1000, budgets="600,1000",
        ckpt_every=10, refresh="auto", speed=1.0, level="3", eval_size=1024, eval_every=50, probe_size=128,
        probe_every=2, probe_positions="8,16,24,32", nt_train=256, nt_eval=256, workers=2,
        methods="ce,oneshot,progressive,two_shot", two_shot_sweep="drop"),
    # The autoregressive variant: cfg3f and speed 2 as the paper's scripts; level 3 only (levels 1 and 2
    # stay on their plateau at this scale, README).
    ("cpu", "boundary"): dict(
        grammar="cfg3f", crop=64, subtree=0, max_len=64, layers=4, head_dim=8, teacher_heads=16, student_heads=4,
        dropout=0.0, batch=64, teacher_batch=64, teacher_lr=3e-3, lr_grid="1e-2", warmup=0.06, schedule="cosine",
        teacher_schedule="cosine", clip=1.0, temperature=1e-20, teacher_steps=2000, budgets="500,1000",
        ckpt_every=50, refresh=200, speed=2.0, level="3", eval_size=1024, eval_every=50, probe_size=128,
        probe_positions="8,16,24,32,40,48", nt_train=256, nt_eval=256, workers=2,
        methods="ce,oneshot,progressive", two_shot_sweep="none"),
    # Seconds, for tests.
    ("smoke", "mlm"): dict(
        grammar="cfg3b", crop=16, subtree=0, max_len=16, layers=1, head_dim=4, teacher_heads=4, student_heads=2,
        dropout=0.0, batch=16, teacher_batch=16, teacher_lr=3e-3, lr_grid="3e-3,1e-2", warmup=0.06, schedule="cosine",
        teacher_schedule="cosine", clip=1.0, temperature=1.0, teacher_steps=40, budgets="20,40",
        ckpt_every=10, refresh=10, speed=1.0, level="3", eval_size=64, eval_every=10, probe_size=16,
        probe_positions="4,8,11", nt_train=32, nt_eval=32, nt_steps=20,
        methods="ce,oneshot,progressive,two_shot", two_shot_sweep="auto", seeds="0,1", workers=1),
    ("smoke", "boundary"): dict(
        grammar="cfg3b", crop=24, subtree=0, max_len=24, layers=1, head_dim=4, teacher_heads=4, student_heads=2,
        dropout=0.0, batch=16, teacher_batch=16, teacher_lr=3e-3, lr_grid="3e-3", warmup=0.06, schedule="cosine",
        teacher_schedule="cosine", clip=1.0, temperature=1.0, teacher_steps=40, budgets="20,40",
        ckpt_every=10, refresh=10, speed=1.0, level="2,3", eval_size=64, eval_every=10, probe_size=16,
        probe_positions="4,8,12", nt_train=32, nt_eval=32, nt_steps=20,
        methods="ce,oneshot,progressive", two_shot_sweep="none", seeds="0,1", workers=1),
}
MODES = ["all", "teacher", "probe", "ce", "oneshot", "progressive", "two_shot"]
DISTILL = ("oneshot", "progressive", "two_shot")
WINDOWS = "3gram:1:1,5gram:2:2,4gram:2:1,2gram:1:0"  # (left, right) context, as the official probing code


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mode", default="all", choices=MODES, help="what to run (see the module docstring)")
    p.add_argument("--objective", default="mlm", choices=["mlm", "boundary"],
                   help="mlm: BERT masked prediction; boundary: causal next-token prediction at span ends (GPT-style)")
    p.add_argument("--preset", default="cpu", choices=["cpu", "paper", "smoke"], help="defaults for all flags below")
    a = p.add_argument_group("task").add_argument
    a("--grammar", choices=sorted(GRAMMARS), help="which cfg3 grammar (Allen-Zhu & Li)")
    a("--crop", type=int, help="train on random crops of this many tokens of [BOS]+sentence; 0 = whole sentences")
    a("--subtree", type=int, help="D > 0: each sequence is [BOS] + the whole span of a random depth-D node "
                                  "(a complete derivation, as a sentence is for D = 0); with --crop 0")
    a("--mask_rate", type=float, default=0.3, help="fraction of positions selected for prediction (80/10/10)")
    a("--hide_masked_keys", type=int, default=1, choices=[0, 1],
      help="1: selected positions are hidden as attention keys, as the official code does")
    a("--level", type=str, help="boundary: depth(s) whose span ends carry labels, e.g. '1,2,3' (root = 0)")
    a("--cache_data", type=int, default=0, choices=[0, 1],
      help="1: write each training stream to <out>/data once and read it back (0: generate on the fly)")
    a = p.add_argument_group("models").add_argument
    a("--layers", type=int, help="encoder layers (teacher and student)")
    a("--head_dim", type=int, help="attention head dimension")
    a("--teacher_heads", type=int, help="teacher heads (width = heads x head_dim)")
    a("--student_heads", type=int, help="student heads")
    a("--max_len", type=int, help="learned position embeddings (>= the longest input)")
    a("--dropout", type=float, help="dropout (BERT default 0.1)")
    a = p.add_argument_group("teacher (AdamW, betas --betas, wd 0, as in the paper)").add_argument
    a("--teacher_batch", type=int, help="sequences per teacher optimizer step (the paper: 512, as the students)")
    a("--teacher_lr", type=float, help="teacher learning rate")
    a("--teacher_steps", type=int, help="teacher optimizer steps")
    a("--teacher_schedule", choices=["constant", "cosine"], help="teacher lr schedule (after warmup)")
    a("--teacher_seed", type=int, default=0, help="teacher init and data seed")
    a("--ckpt_every", type=int, help="teacher checkpoint interval (steps); step 0 is always saved")
    a("--teacher_dir", type=str, default=None, help="reuse the teacher of an earlier run (its --out folder)")
    a = p.add_argument_group("students").add_argument
    a("--batch", type=int, help="sequences per student optimizer step (fresh samples every step)")
    a("--lr", type=float, default=None, help="one student learning rate (replaces --lr_grid)")
    a("--lr_grid", type=str, help="student learning rates; each method is reported at its best one")
    a("--schedule", choices=["constant", "cosine"], help="student lr schedule (after warmup)")
    a("--warmup", type=float, help="linear warmup, fraction of a run's optimizer steps (teacher too)")
    a("--clip", type=float, help="gradient-norm clipping (HF Trainer default 1.0; 0 = off; teacher too)")
    a("--betas", type=str, default="0.9,0.95", help="Adam betas (teacher too)")
    a("--budgets", type=str, help="student step budgets (Fig. 1 right); each <= --teacher_steps")
    a("--seeds", type=str, default="0,1,2", help="student seeds (the paper averages 3)")
    a("--methods", type=str, help="--mode all: which students to train (ce, oneshot, progressive, two_shot)")
    a = p.add_argument_group("distillation").add_argument
    a("--temperature", type=float, help="teacher softmax temperature; 1e-20 = argmax targets (paper code)")
    a("--refresh", type=str, help="progressive: the teacher checkpoint can change every this many steps; auto = "
                                  "the teacher's inflection (our rule; the paper's 1000 equals its C1, Fig. 4)")
    a("--speed", type=float, help="progressive: the teacher advances this many times faster than the student")
    a("--ckpt", type=str, default="auto", help="two_shot stage-1 checkpoint step, or auto (see --auto_by)")
    a("--auto_by", default="loss", choices=["loss", "mrobust"],
      help="--ckpt auto: inflection of the teacher's loss, or peak of the 3-gram M_robust median")
    a("--two_shot_frac", type=float, default=0.5, help="two_shot: stage 1 lasts this fraction of the budget")
    a("--two_shot_sweep", type=str,
      help="stage-1 checkpoints for the curriculum figure at the smallest budget: steps, auto (five around "
           "the chosen one and the drop), drop (the drop's start and end) or none")
    a = p.add_argument_group("probes").add_argument
    a("--probe_size", type=int, help="sentences (or crops) for M_robust / M_close (paper: 1024)")
    a("--probe_positions", type=str, help="positions p probed by M_robust / M_close (BOS = 0)")
    a("--windows", type=str, default=WINDOWS, help="n-gram windows name:left:right around p")
    a("--probe_every", type=int, default=1, help="probe every k-th teacher checkpoint")
    a("--nt_train", type=int, help="sequences that train the non-terminal probe")
    a("--nt_eval", type=int, help="sequences that evaluate the non-terminal probe")
    a("--nt_steps", type=int, default=200, help="full-batch Adam steps of the non-terminal probe")
    a = p.add_argument_group("run").add_argument
    a("--eval_size", type=int, help="held-out sequences (paper: 4096), fixed by seed")
    a("--eval_every", type=int, help="student evaluation interval (steps)")
    a("--eval_batch", type=int, default=256, help="sequences per forward pass in evaluation and probes")
    a("--out", type=str, default=None, help="run folder (default out/pcfg/<preset>-<objective>-<mode>)")
    a("--resume", action="store_true", help="continue the run in --out from its last checkpoints")
    a("--save_every", type=int, default=None, help="student resume-checkpoint interval (default: 4 evals)")
    a("--device", type=str, default="auto", help="auto, cpu, cuda, cuda:N or mps")
    a("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    a("--workers", type=int, help="processes that train student groups / probe checkpoints in parallel (CPU: one "
                                  "per core, 1 thread each)")
    a("--max_steps", type=int, default=None, help=argparse.SUPPRESS)  # tests: stop every training run here
    a("--halt_at", type=str, default=None, help=argparse.SUPPRESS)  # tests: "teacher:N" or "students:N"
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = common.parse_with_presets(parser, lambda f: PRESETS[(f.preset, f.objective)], argv)
    args.teacher_lr_given = any(a.split("=")[0] == "--teacher_lr" for a in (sys.argv[1:] if argv is None else argv))
    validate(args)
    return args


# ----------------------------------------------------------------------------------------------------
# 1. Grammars (Sec. 4.1). From Allen-Zhu & Li, as in the paper's code. Strictly
# layered: s -> {p,q,r} -> {m,n,o} -> {j,k,l} -> {g,h,i} -> {d,e,f} -> preterminals {a,b,c} -> one token,
# so every token has exactly 7 ancestors (depths 0..6). Rule probabilities are uniform per left-hand side,
# rounded to 3 decimals with the remainder on the last rule (0.333/0.333/0.334), as the original pickles.

GRAMMARS = {
    "cfg3b": """
s -> r q | q p
p -> m n o | n o m
q -> n m o | m n
r -> o m | m o n
m -> l j | j l k
n -> k j l | l j k
o -> l k j | k j
j -> h i | i h
k -> h g i | g h i
l -> i h g | h i g
g -> d f e | f e d
h -> e d f | d e f
i -> e f d | f d e
d -> c a | a b c
e -> c b | c a b
f -> c b a""",
    "cfg3f": """
s -> q r | q p r | r p p | q q
p -> o m o | n o | o o
q -> m m | m n | n m o
r -> o n | n m | m n o | m o
m -> l l | j l j | k j | k k
n -> l k j | k l | l k
o -> k l j | l j j | j l
j -> h i | i h i | g i h
k -> g i | i g i | i h | g i i
l -> g h h | h h g | g g | i i h
g -> e f f | f d f | d f f
h -> e e | f d | f d d
i -> d f d | f e | e e f
d -> b b a | c b b | c a b | c b
e -> c a a | a b | c c a
f -> a b a | c c | a a""",
    "cfg3g": """
s -> p q | q q p | q p r
p -> n n m | o n m | o m n
q -> m n | o o | m n n
r -> m m | m m o | o m
m -> k j j | j k | j j
n -> k j k | k l j | l k
o -> l j | l l | k j l
j -> g i | h h h | h h
k -> h i | g h g | g g
l -> g h | i g g | i h
g -> e e e | d d d | d d
h -> e e f | f d | e f d
i -> d f | d e | f f f
d -> b c a | a a | b b
e -> a c b | a c | c c a
f -> b c c | b c | b a""",
    "cfg3h": """
s -> q q r | p r
p -> m n | o n
q -> o m | n m
r -> n n o | n o n
m -> k j | l j
n -> j k | l j l
o -> l j j | l k k | k l l
j -> i h | h g
k -> g i i | g g | i i g
l -> g i | h h g
g -> e d f | f d | e e
h -> e d d | d d | d f f
i -> d f | e d | f e
d -> b c b | a b c | a c a
e -> a b | c c a | a c
f -> b a c | a c c""",
    "cfg3i": """
s -> p p q | r q p
p -> o m o | m m
q -> n m n | o o
r -> m m o | o n
m -> j j | k k
n -> l l | l k
o -> k l j | k l
j -> i h | g i h
k -> g g g | g g
l -> h h g | h g i
g -> e d d | f f
h -> d d d | d d e
i -> d f f | e d
d -> c a b | b c a
e -> a a | b b
f -> a a c | a b""",
}
SYMBOLS = "abcdefghijklmnopqrs"              # a, b, c are the preterminals; s is the root
LEVEL_OF = {**{c: 6 for c in "abc"}, **{c: 5 for c in "def"}, **{c: 4 for c in "ghi"}, **{c: 3 for c in "jkl"},
            **{c: 2 for c in "mno"}, **{c: 1 for c in "pqr"}, "s": 0}
TOKENS = {"a": 0, "b": 1, "c": 2, "BOS": 3, "EOS": 4, "PAD": 5, "MASK": 6}  # the official map
BOS, PAD, MASK = TOKENS["BOS"], TOKENS["PAD"], TOKENS["MASK"]
VOCAB = 8                                   # as the paper's models (id 7 is never used)
TERMINAL_IDS = torch.tensor([0, 1, 2])      # random replacements of the 80/10/10 rule


def uniform_probs(k):
    """Uniform over k rules, rounded like the official parse_pcfg.py: 0.5/0.5, 0.333/0.333/0.334, 0.25 x4."""
    p = round(1 / k, 3)
    return [p] * (k - 1) + [1 - p * (k - 1)]


@lru_cache(maxsize=None)
def grammar(name):
    """Compile a grammar's text into arrays for the vectorised sampler: for each symbol the index of its
    first rule and the cumulative rule probabilities; for each rule its children (padded with -1)."""
    rules = {}
    for line in GRAMMARS[name].strip().splitlines():
        lhs, rhs = line.split("->")
        rules[lhs.strip()] = [alt.split() for alt in rhs.split("|")]
    for lhs, alts in rules.items():  # check the layering the sampler relies on
        assert all(LEVEL_OF[c] == LEVEL_OF[lhs] + 1 for alt in alts for c in alt), (name, lhs)
    n_sym, width = len(SYMBOLS), max(len(alt) for alts in rules.values() for alt in alts)
    max_rules = max(len(alts) for alts in rules.values())
    first, cum = np.zeros(n_sym, np.int64), np.full((n_sym, max_rules), np.inf)
    children, n_children = [], []
    for sym in SYMBOLS:
        i = SYMBOLS.index(sym)
        alts = rules.get(sym, [[]])  # preterminals: no rule (they emit their token)
        first[i] = len(children)
        probs = uniform_probs(len(alts))
        cum[i, :len(alts) - 1] = np.cumsum(probs)[:-1]  # the last rule takes everything left (no float gap)
        for alt in alts:
            children.append([SYMBOLS.index(c) for c in alt] + [-1] * (width - len(alt)))
            n_children.append(len(alt))
    depth = max(LEVEL_OF.values())
    # the longest sentence: max over rules of the sum of the children's longest expansions, bottom-up
    longest = {c: 1 for c in "abc"}
    for level in range(depth - 1, -1, -1):
        for sym, alts in rules.items():
            if LEVEL_OF[sym] == level:
                longest[sym] = max(sum(longest[c] for c in alt) for alt in alts)
    classes = [sorted(SYMBOLS.index(c) for c in SYMBOLS if LEVEL_OF[c] == d) for d in range(depth + 1)]
    class_of = np.zeros(n_sym, np.int64)
    for syms in classes:
        for k, s in enumerate(syms):
            class_of[s] = k
    return {"name": name, "rules": rules, "first": first, "cum": cum, "children": np.array(children),
            "n_children": np.array(n_children), "start": SYMBOLS.index("s"), "depth": depth,
            "token_of": np.array([TOKENS.get(c, -1) for c in SYMBOLS]), "max_len": longest["s"],
            "longest_at": [max(v for k, v in longest.items() if LEVEL_OF[k] == d) for d in range(depth + 1)],
            "n_classes": [len(c) for c in classes], "class_of": class_of}


# ----------------------------------------------------------------------------------------------------
# 2. Sampler. Top-down like the paper's recursive sampler, but one whole tree level of a batch of sentences
# at a time (numpy), so it runs at millions of tokens per second. For each token it returns its 7 ancestors
# (depth 0 = s ... depth 6 = preterminal) and `ends`: whether the token closes each ancestor's span.

def sample_sentences(g, n, rng):
    """n sentences -> dict(tokens (N,), anc (N, 7) symbol indices, ends (N, 7) bool, offsets (n+1,))."""
    nodes = np.full(n, g["start"])
    syms, parents, last = [nodes], [], []
    width = g["children"].shape[1]
    for _ in range(g["depth"]):
        rule = g["first"][nodes] + (rng.random(len(nodes))[:, None] >= g["cum"][nodes]).sum(1)
        k = g["n_children"][rule]
        keep = np.arange(width)[None] < k[:, None]  # row-major: children stay in left-to-right order
        nodes = g["children"][rule][keep]
        parents.append(np.repeat(np.arange(len(k)), k))
        last.append((np.arange(width)[None] == (k - 1)[:, None])[keep])
        syms.append(nodes)
    D = g["depth"] + 1
    anc = np.empty((len(nodes), D), np.int64)
    is_last = np.ones((len(nodes), D + 1), bool)  # is_last[:, d]: the depth-d node is its parent's last child
    idx = np.arange(len(nodes))
    for d in range(D - 1, -1, -1):
        anc[:, d] = syms[d][idx]
        if d > 0:
            is_last[:, d] = last[d - 1][idx]
            idx = parents[d - 1][idx]
    # a token closes its depth-d ancestor's span iff every node below that ancestor is a last child
    ends = np.flip(np.cumprod(np.flip(is_last[:, 1:], 1), 1), 1).astype(bool)
    lengths = np.bincount(idx, minlength=n)
    return {"tokens": g["token_of"][nodes], "anc": anc, "ends": ends,
            "offsets": np.concatenate([[0], np.cumsum(lengths)])}


def subtree_spans(s, depth, rng):
    """(first token, length) of one uniformly chosen depth-`depth` node's span in each sentence of `s`."""
    closes = s["ends"][:, depth]
    span_of = np.concatenate([[0], np.cumsum(closes)[:-1]])  # running span index of every token
    lo, hi = span_of[s["offsets"][:-1]], span_of[s["offsets"][1:] - 1]
    pick = lo + (rng.random(len(lo)) * (hi - lo + 1)).astype(np.int64)
    first = np.searchsorted(span_of, pick)
    return first, np.searchsorted(span_of, pick, side="right") - first


def sample_batch(g, n, rng, crop, subtree=0):
    """n sequences [BOS] + sentence, or a random `crop`-token window of one (crop=0: whole sentences, padded
    with PAD), or (subtree=D) [BOS] + the whole span of a random depth-D node, padded: a complete derivation
    of the grammar cut below depth D. Returns torch tensors ids (n,T), anc (n,T,7) (-1 at BOS/PAD) and
    ends (n,T,7)."""
    s = sample_sentences(g, n, rng)
    first, length = subtree_spans(s, subtree, rng) if subtree else (s["offsets"][:-1], np.diff(s["offsets"]))
    length = length + 1  # with BOS
    T = crop or int(length.max())
    start = (rng.random(n) * np.maximum(length - T + 1, 1)).astype(np.int64) if crop else np.zeros(n, np.int64)
    pos = start[:, None] + np.arange(T)[None]  # position in [BOS] + sentence
    real = (pos >= 1) & (pos < length[:, None])
    src = np.where(real, first[:, None] + pos - 1, 0)
    ids = np.where(real, s["tokens"][src], np.where(pos == 0, BOS, PAD))
    anc = np.where(real[..., None], s["anc"][src], -1)
    ends = real[..., None] & s["ends"][src]
    return torch.from_numpy(ids), torch.from_numpy(anc), torch.from_numpy(ends)


def rng_for(seed, stream, index=0):
    """Independent, reproducible numpy streams: 1 teacher data, 2 student data, 3 held-out set, 4 n-gram probe,
    5/6 NT probe train/eval. A training batch depends only on (seed, stream, step): students of every budget
    and method with the same seed see the same data, and --resume needs no generator state."""
    return np.random.default_rng([seed, stream, index])


def sample_for(args, n, rng):
    """n sequences of the kind the flags ask for (--grammar, --crop, --subtree)."""
    return sample_batch(grammar(args.grammar), n, rng, args.crop, args.subtree)


def stream_batch(args, stream):
    """Sequences per step of a training stream: 1 is the teacher's (--teacher_batch), 2 the students' (--batch)."""
    return args.teacher_batch if stream == 1 else args.batch


def train_batch(args, seed, stream, step):
    """The batch of optimizer step `step`, generated on the fly or read from <out>/data (--cache_data)."""
    if not args.cache_data:
        return sample_for(args, stream_batch(args, stream), rng_for(seed, stream, step))
    return cached_stream(args, seed, stream)[step]


_CACHE = {}


def cached_stream(args, seed, stream):
    """Write the whole stream to disk once (same content as on the fly), then read it back."""
    n = args.teacher_steps if stream == 1 else max(args.budget_list)
    b = stream_batch(args, stream)
    name = f"{args.grammar}-crop{args.crop}-sub{args.subtree}-b{b}-seed{seed}-s{stream}.pt"
    path = os.path.join(args.out, "data", name)
    if path not in _CACHE:
        if not os.path.exists(path):
            batches = [sample_for(args, b, rng_for(seed, stream, i)) for i in range(n)]
            common.save_checkpoint(batches, path)
        _CACHE[path] = common.load_checkpoint(path)
    return _CACHE[path]


def fixed_set(args, stream, n):
    """Probe sets, fixed by seed 12345 and a stream of their own."""
    return sample_for(args, n, rng_for(12345, stream))


def seq_key(row):
    return row[row != PAD].numpy().astype(np.int8).tobytes()


def training_keys(args):
    """Every sequence of this run's training streams: the teacher's (as it was trained) and each student seed's."""
    cfg = common.read_json(os.path.join(args.teacher_dir, "config.json")) if args.teacher_dir else vars(args)
    streams = [(cfg["teacher_seed"], 1, cfg["teacher_steps"])] if args.mode != "ce" or args.teacher_dir else []
    streams += [(seed, 2, max(args.budget_list)) for seed in args.seed_list]
    keys = set()
    for seed, stream, steps in streams:
        b = cfg["teacher_batch"] if stream == 1 else args.batch
        for step in range(steps):
            keys.update(seq_key(r) for r in sample_for(args, b, rng_for(seed, stream, step))[0])
    return keys


def heldout_set(args):
    """The held-out set: sequences that occur in none of this run's training streams, so held-out accuracy never
    scores a memorised item (at the cpu preset 161 of 1024 depth-2 subtrees would). Drawn in chunks of --eval_size from
    stream 3 until enough are left. Whole sentences (cfg3b: 161-432 tokens) do not repeat and are not scanned.
    Cached in <out>/heldout.pt, so worker processes read the same set."""
    path = os.path.join(args.out, "heldout.pt")
    if os.path.exists(path):
        return common.load_checkpoint(path)
    seen = training_keys(args) if args.crop or args.subtree else set()
    parts, kept = [], 0
    while kept < args.eval_size:
        ids, anc, ends = sample_for(args, args.eval_size, rng_for(12345, 3, len(parts)))
        ok = torch.tensor([seq_key(r) not in seen for r in ids], dtype=torch.bool)
        parts.append((ids[ok], anc[ok], ends[ok]))
        kept += int(ok.sum())
        if len(parts) == 1:
            dropped = len(ids) - kept  # overlaps in a plain sample of the population
    T = max(p[0].shape[1] for p in parts)
    padded = [(F.pad(i, (0, T - i.shape[1]), value=PAD), F.pad(a, (0, 0, 0, T - a.shape[1]), value=-1),
               F.pad(e, (0, 0, 0, T - e.shape[1]))) for i, a, e in parts]
    ids, anc, ends = (torch.cat(x)[:args.eval_size] for x in zip(*padded))
    out = {"ids": ids, "anc": anc, "ends": ends, "scanned": bool(seen), "distinct_training_sequences": len(seen),
           "overlapping_in_first_draw": dropped}
    common.save_checkpoint(out, path)
    return out


# ----------------------------------------------------------------------------------------------------
# 3. Prediction targets. MLM (Sec. 4): each position is selected with probability 0.3;
# a selected one becomes [MASK] 80%, stays 10%, a random terminal 10%; the loss is on selected positions.
# The official code also hides every selected position as an attention key, kept by default.

def mask_tokens(ids, gen, rate, mask_id, random_ids, can_select, hide_selected=True, attendable=None):
    """BERT masking. ids (B,T) long; gen a torch.Generator on ids' device; random_ids a 1-D tensor of ids a
    random replacement is drawn from (may equal the original, as in BERT); can_select (B,T) bool (e.g. not
    PAD). Returns (inputs, labels with -100 at unselected positions, key_mask), key_mask True where a key
    may be attended: `attendable` (default can_select), minus the selected positions if hide_selected."""
    u = torch.rand(ids.shape, generator=gen, device=ids.device)
    pick = torch.randint(len(random_ids), ids.shape, generator=gen, device=ids.device)
    selected = (u < rate) & can_select
    inputs = torch.where(selected & (u < 0.8 * rate), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(selected & (u >= 0.8 * rate) & (u < 0.9 * rate), random_ids.to(ids.device)[pick], inputs)
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    key_mask = can_select if attendable is None else attendable
    return inputs, labels, (key_mask & ~selected) if hide_selected else key_mask.clone()


def boundary_targets(ids, ends, level):
    """GPT-style variant (as the official autoregressive code): next-token targets only where the next
    token closes the span of its depth-`level` ancestor. targets[:, i] = ids[:, i+1] there, -100 elsewhere
    (causal shift)."""
    targets = torch.full_like(ids, -100)
    closes = ends[:, 1:, level]
    targets[:, :-1] = torch.where(closes, ids[:, 1:], targets[:, :-1])
    return targets


def make_inputs(args, ids, ends, level, seed_material):
    """(inputs, key_mask or None, targets) for one batch of either objective. Masks are drawn on the CPU from
    a generator seeded by the batch, so the data are the same on every device."""
    if args.objective == "boundary":
        return ids, None, boundary_targets(ids, ends, level)
    gen = torch.Generator().manual_seed(int(seed_material))
    inputs, labels, key_mask = mask_tokens(ids, gen, args.mask_rate, MASK, TERMINAL_IDS, ids != PAD,
                                           hide_selected=bool(args.hide_masked_keys))
    return inputs, key_mask, labels


def batch_for(args, seed, stream, step, level):
    ids, _, ends = train_batch(args, seed, stream, step)
    x, km, y = make_inputs(args, ids, ends, level, 7919 * step + 104729 * seed + stream)
    dev = args.device
    return x.to(dev), (None if km is None else km.to(dev)), y.to(dev)


def eval_set(args, level):
    """The held-out set as device batches of (inputs, key_mask, targets); masks fixed by seed."""
    h = heldout_set(args)
    ids, ends = h["ids"], h["ends"]
    x, km, y = make_inputs(args, ids, ends, level, 12345)
    out = []
    for i in range(0, len(x), args.eval_batch):
        sl = slice(i, i + args.eval_batch)
        out.append((x[sl].to(args.device), None if km is None else km[sl].to(args.device), y[sl].to(args.device)))
    return out


# ----------------------------------------------------------------------------------------------------
# 4. Model: BERT in plain PyTorch (Sec. 4): learned positions, post-LN blocks with GELU MLPs of
# width 4d, LayerNorm eps 1e-12, init N(0, 0.02), MLM head dense + GELU + LN + decoder tied to the token
# embeddings. No token types and no padding_idx (the official config's padding_idx=0 is terminal 'a').
# causal=True gives the GPT-style model of the boundary objective, same block.

class Block(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=1e-12), nn.LayerNorm(d, eps=1e-12)

    def forward(self, h, bias, causal):
        B, T, d = h.shape
        q, k, v = self.qkv(h).view(B, T, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p, is_causal=causal and bias is None)
        h = self.ln1(h + F.dropout(self.proj(a.transpose(1, 2).reshape(B, T, d)), p, self.training))
        return self.ln2(h + F.dropout(self.out(F.gelu(self.fc(h))), p, self.training))


class Encoder(nn.Module):
    """BERT-style encoder with an MLM head. forward(ids (B,T) long, key_mask (B,T) bool or None, where True
    = may be attended to as a key) -> logits (B,T,vocab), and the last hidden states if return_hidden."""

    def __init__(self, vocab_size, max_len, layers, heads, head_dim, dropout=0.0, causal=False):
        super().__init__()
        d = heads * head_dim
        self.causal, self.dropout = causal, dropout
        self.tok, self.pos = nn.Embedding(vocab_size, d), nn.Embedding(max_len, d)
        self.ln_emb = nn.LayerNorm(d, eps=1e-12)
        self.blocks = nn.ModuleList(Block(d, heads, dropout) for _ in range(layers))
        self.head, self.head_ln = nn.Linear(d, d), nn.LayerNorm(d, eps=1e-12)
        self.head_bias = nn.Parameter(torch.zeros(vocab_size))
        for m in self.modules():  # BERT init
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def attention_bias(self, key_mask, T, dtype):
        """Additive mask. A large finite negative (as HF BERT) rather than -inf, so a query whose keys are
        all hidden gets a uniform average instead of NaN. None when nothing is hidden (fast path)."""
        if key_mask is None:
            return None
        neg = torch.finfo(dtype).min / 2  # two of them (key + causal) still do not overflow
        bias = torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device).masked_fill_(~key_mask, neg)
        bias = bias[:, None, None, :]
        if self.causal:
            future = torch.ones(T, T, dtype=torch.bool, device=key_mask.device).triu_(1)
            bias = bias + torch.zeros(T, T, dtype=dtype, device=key_mask.device).masked_fill_(future, neg)
        return bias

    def forward(self, ids, key_mask=None, return_hidden=False, select=None):
        """select (B,T) bool: apply the MLM head only there and return logits (n, vocab) = full[select];
        with a large vocabulary (lm_pretrain.py) the head costs more than the encoder."""
        T = ids.shape[1]
        h = self.ln_emb(self.tok(ids) + self.pos.weight[:T])
        h = F.dropout(h, self.dropout, self.training)
        bias = self.attention_bias(key_mask, T, h.dtype)
        for block in self.blocks:
            h = block(h, bias, self.causal)
        out = h if select is None else h[select]
        logits = self.head_ln(F.gelu(self.head(out))) @ self.tok.weight.T + self.head_bias
        return (logits, h) if return_hidden else logits


def make_model(args, role, seed):
    """Same seed => same init across methods and learning rates. The global RNG (dropout) is left as it
    was, so that loading a teacher checkpoint mid-run never changes a student's dropout masks."""
    heads = args.teacher_heads if role == "teacher" else args.student_heads
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1000 * seed + (0 if role == "teacher" else 5))
        model = Encoder(VOCAB, args.max_len, args.layers, heads, args.head_dim, args.dropout,
                        causal=args.objective == "boundary")
    return model.to(args.device)


def make_optimizer(model, lr, args):
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=args.beta_pair, weight_decay=0.0, eps=1e-8)


def train_step(model, opt, lr, x, key_mask, targets, soft=None, clip=1.0):
    """One AdamW step on the positions that carry a target: CE on labels, or the distillation loss
    -sum_v q_v log p_v against teacher distributions `soft` at those positions (Sec. 2)."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    sel = targets != -100
    logits = model(x, key_mask, select=sel)
    if soft is None:
        loss = F.cross_entropy(logits.float(), targets[sel])
    else:
        loss = common.soft_cross_entropy(logits, soft).mean()
    loss.backward()
    if clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.detach()


@torch.no_grad()
def evaluate(model, batches):
    """Loss and top-1 accuracy over all positions that carry a target (token-weighted)."""
    was = model.training
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for x, km, y in batches:
        sel = y != -100
        logits = model(x, km)[sel].float()
        loss += F.cross_entropy(logits, y[sel], reduction="sum").item()
        correct += (logits.argmax(-1) == y[sel]).sum().item()
        count += int(sel.sum())
    model.train(was)
    return loss / max(count, 1), correct / max(count, 1)


def halt_if_asked(args, phase, step):
    """Testing aid: die abruptly, as a killed job would, to check that --resume ends the same."""
    if args.halt_at == f"{phase}:{step}":
        print(f"halting at {phase} step {step} (--halt_at)", flush=True)
        os._exit(1)


def capped(args, steps):
    return steps if args.max_steps is None else min(steps, args.max_steps)


# ----------------------------------------------------------------------------------------------------
# 5. Teacher training: the wide model on labels, checkpointed every --ckpt_every steps, step 0 included
# (the official scripts save no step 0, which breaks the progressive lookup at the start).

def teacher_folder(run_dir, level):
    return os.path.join(run_dir, "ckpt", "teacher" if level is None else f"teacher_level{level}")


def saved_steps(run_dir, level):
    folder = teacher_folder(run_dir, level)
    if not os.path.isdir(folder):
        return []
    return sorted(int(f[5:-3]) for f in os.listdir(folder) if f.startswith("step_") and f.endswith(".pt"))


def planned_steps(total, every):
    return sorted(set(range(0, total + 1, every)) | {total})


def ckpt_path(folder, step):
    return os.path.join(folder, f"step_{step:09d}.pt")


def train_teacher(args, level, heldout):
    folder = teacher_folder(args.out, level)
    state_path = os.path.join(folder, "state.pt")
    metrics = os.path.join(args.out, "metrics.jsonl")
    phase = "teacher" if level is None else f"teacher_level{level}"
    model = make_model(args, "teacher", args.teacher_seed)
    opt = make_optimizer(model, args.teacher_lr, args)
    total = args.teacher_steps
    start = 0
    if os.path.exists(state_path):
        state = common.load_checkpoint(state_path, args.device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["torch_rng"])
        start = state["step"]
        if start >= capped(args, total):
            return
        print(f"{phase}: resuming at step {start}")
    common.rewrite_jsonl(metrics, [r for r in common.read_jsonl(metrics)
                                   if r["phase"] != phase or r["step"] <= start])

    def checkpoint(step_no, train_loss=None):
        val_loss, val_acc = evaluate(model, heldout)
        common.check_finite(val_loss, f"{phase} validation loss at step {step_no}")
        common.append_jsonl(metrics, {"phase": phase, "step": step_no, "val_loss": val_loss, "val_acc": val_acc,
                                      "train_loss": train_loss})
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        common.save_checkpoint({"model": sd, "step": step_no, "val_loss": val_loss, "val_acc": val_acc},
                               ckpt_path(folder, step_no))
        common.save_checkpoint({"model": model.state_dict(), "opt": opt.state_dict(), "step": step_no,
                                "torch_rng": torch.get_rng_state()}, state_path)
        return val_loss, val_acc

    if start == 0:
        checkpoint(0)
    model.train()
    t0, loss_sum, n = time.time(), torch.zeros((), device=args.device), 0
    for step in range(start, capped(args, total)):
        lr = args.teacher_lr * common.lr_factor(step, total, args.teacher_schedule, args.warmup)
        loss_sum += train_step(model, opt, lr, *batch_for(args, args.teacher_seed, 1, step, level), clip=args.clip)
        n += 1
        halt_if_asked(args, "teacher", step + 1)
        done = step + 1
        if done % args.ckpt_every == 0 or done == total or done == capped(args, total):
            train_loss = loss_sum.item() / n
            common.check_finite(train_loss, f"{phase} training loss at step {done}")
            val_loss, val_acc = checkpoint(done, train_loss)
            loss_sum.zero_()
            n = 0
            if done % (10 * args.ckpt_every) == 0 or done == total:
                print(f"{phase} step {done:>6d}  val loss {val_loss:.4f}  acc {val_acc:.3f}  "
                      f"({time.time() - t0:.0f}s)", flush=True)


@lru_cache(maxsize=256)
def load_teacher_file(folder, step, device):
    return common.load_checkpoint(ckpt_path(folder, step), device)


def teacher_curve(args, level):
    run = args.teacher_dir or args.out
    steps = saved_steps(run, level)
    files = [load_teacher_file(teacher_folder(run, level), s, "cpu") for s in steps]
    return {"steps": steps, "val_loss": [f["val_loss"] for f in files], "val_acc": [f["val_acc"] for f in files]}


def find_phases(steps, losses, frac=0.25):
    """Three phases of the teacher's loss (Sec. 4.2, Fig. 4 left). A continuous piecewise-linear fit against
    log(1 + step) (the paper's axis; it keeps the fast initial fall from dominating) with breakpoints at
    checkpoints gives the plateau start and the drop start; the drop ends where the (3-point smoothed) rate
    of descent falls below `frac` of its peak; the inflection C1 is the checkpoint ending the steepest interval."""
    s, y = np.asarray(steps, float), np.asarray(losses, float)
    n = len(s)
    if n < 6:
        return None
    x = np.log1p(s)
    best = None
    for i in range(1, n - 3):
        for j in range(i + 1, n - 2):
            for k in range(j + 1, n - 1):
                X = np.stack([np.ones(n), x] + [np.maximum(x - x[m], 0) for m in (i, j, k)], 1)
                coef = np.linalg.lstsq(X, y, rcond=None)[0]
                err = float(((X @ coef - y) ** 2).sum())
                if best is None or err < best[0]:
                    best = (err, i, j, k)
    _, i, j, k = best
    rate = -np.diff(y) / np.diff(s)  # loss decrease per step on each interval
    rate = np.convolve(np.pad(rate, 1, mode="edge"), np.ones(3) / 3, "valid")
    c = j + int(np.argmax(rate[j:k]))
    e = c
    while e < len(rate) - 1 and rate[e + 1] >= frac * rate[c]:
        e += 1
    slope = lambda a, b: float((y[b] - y[a]) / max(s[b] - s[a], 1))
    return {"plateau_start": int(s[i]), "drop_start": int(s[j]), "drop_end": int(s[e + 1]),
            "inflection": int(s[c + 1]), "plateau_loss": float(y[i:j + 1].mean()),
            # mean loss change per step; the plateau's over its second half (its start still carries the fall)
            "slopes": {"plateau": slope((i + j) // 2, j), "drop": slope(j, e + 1), "decay": slope(e + 1, n - 1)}}


# ----------------------------------------------------------------------------------------------------
# 6. Distillation (Sec. 2). The teacher sees the student's own (masked) inputs and key
# mask. Students learn from the teacher's run truncated at its horizon min(speed x budget, teacher steps): at
# budget B every method uses a teacher trained as long as itself, as in Fig. 1 right.

def teacher_ckpt_for(step, saved_steps, refresh, speed):
    """Progressive schedule (the official refresh-and-speed rule, without its lookup bugs): student step
    `step` learns from the latest saved checkpoint <= speed x (floor(step / refresh) + 1) x refresh, so the
    teacher changes every `refresh` steps and runs `speed` times faster, one refresh ahead. speed = inf gives
    the final checkpoint (one-shot).
    Unlike the official lookup, a step-0 checkpoint is required, so no request falls before the first one."""
    target = speed * (step // refresh + 1) * refresh
    candidates = [s for s in saved_steps if s <= target]
    if not candidates:
        raise ValueError(f"no saved checkpoint <= {target}; save step 0")
    return max(candidates)


def schedule_for(method, step, saved, args, budget, stage1=None):
    """Teacher checkpoint of `method` at student step `step` (saved: the checkpoints within the horizon)."""
    if method == "oneshot":  # the horizon's last checkpoint (the rule with speed = inf)
        return saved[-1]
    if method == "progressive":
        return teacher_ckpt_for(step, saved, args.refresh, args.speed)
    if method == "two_shot":  # Alg. 1, (2,T)-progressive: one intermediate checkpoint for T steps, then final
        return stage1 if step < round(args.two_shot_frac * budget) else saved[-1]
    raise ValueError(method)


def horizon_steps(saved, args, budget):
    limit = min(args.speed * budget, saved[-1])
    return [s for s in saved if s <= limit]


class TeacherPool:
    """Teacher checkpoints as ready models; a forward pass is shared by every student that asks for the
    same checkpoint on the same batch (all learning rates of a seed, and methods that coincide)."""

    def __init__(self, args, level, size=6):
        self.args, self.folder, self.size = args, teacher_folder(args.teacher_dir or args.out, level), size
        self.models = OrderedDict()

    def get(self, step):
        if step not in self.models:
            if len(self.models) >= self.size:
                self.models.popitem(last=False)
            model = make_model(self.args, "teacher", 0).eval()
            model.load_state_dict(load_teacher_file(self.folder, step, self.args.device)["model"])
            self.models[step] = model
        self.models.move_to_end(step)
        return self.models[step]

    @torch.no_grad()
    def targets(self, step, x, key_mask, sel, temperature):
        return common.distill_targets(self.get(step)(x, key_mask)[sel], temperature)


def group_name(budget, seed, level, tag=""):
    return f"b{budget}-s{seed}" + ("" if level is None else f"-L{level}") + tag


def train_group(args, level, budget, seed, specs, heldout, tag=""):
    """Train the students of one (budget, seed): every method x lr in `specs`, step by step on the same batches
    so that teacher forward passes are shared. Resumable; returns {spec name: {"acc", "curve", "lr"}}."""
    name = group_name(budget, seed, level, tag)
    folder = os.path.join(args.out, "ckpt", "students")
    state_path, done_path = os.path.join(folder, name + ".pt"), os.path.join(folder, name + ".json")
    if os.path.exists(done_path):
        return common.read_json(done_path)
    metrics = os.path.join(args.out, "metrics.jsonl")
    run = args.teacher_dir or args.out
    saved = horizon_steps(saved_steps(run, level), args, budget) if any(sp["method"] != "ce" for sp in specs) else []
    pool = TeacherPool(args, level)
    models = [make_model(args, "student", seed) for _ in specs]
    opts = [make_optimizer(m, sp["lr"], args) for m, sp in zip(models, specs)]
    history, start = {"steps": [], "acc": []}, 0
    if os.path.exists(state_path):
        state = common.load_checkpoint(state_path, args.device)
        for m, o, ms, os_ in zip(models, opts, state["models"], state["opts"]):
            m.load_state_dict(ms)
            o.load_state_dict(os_)
        torch.set_rng_state(state["torch_rng"])
        history, start = state["history"], state["step"]
        print(f"students {name}: resuming at step {start}")
    common.rewrite_jsonl(metrics, [r for r in common.read_jsonl(metrics)
                                   if r["phase"] != "students" or r["group"] != name or r["step"] <= start])

    def log_eval(step_no):
        accs = [evaluate(m, heldout)[1] for m in models]
        history["steps"].append(step_no)
        history["acc"].append(accs)
        common.append_jsonl(metrics, {"phase": "students", "group": name, "step": step_no,
                                      "acc": {sp["name"]: a for sp, a in zip(specs, accs)}})

    if start == 0:
        log_eval(0)
    for m in models:
        m.train()
    t0 = time.time()
    end = capped(args, budget)
    for step in range(start, end):
        x, km, y = batch_for(args, seed, 2, step, level)
        sel = y != -100
        factor = common.lr_factor(step, budget, args.schedule, args.warmup)
        soft = {}
        for sp in specs:
            if sp["method"] != "ce":
                ck = schedule_for(sp["method"], step, saved, args, budget, sp.get("stage1"))
                if ck not in soft:
                    soft[ck] = pool.targets(ck, x, km, sel, args.temperature)
                sp["_ck"] = ck
        losses = [train_step(m, o, sp["lr"] * factor, x, km, y, None if sp["method"] == "ce" else soft[sp["_ck"]],
                             args.clip) for m, o, sp in zip(models, opts, specs)]
        halt_if_asked(args, "students", step + 1)
        done = step + 1
        if done % args.eval_every == 0 or done == end:
            bad = [sp["name"] for sp, l in zip(specs, losses) if not math.isfinite(l.item())]
            if bad:
                common.check_finite(float("nan"), f"training loss of {', '.join(bad)} at step {done} ({name})")
            log_eval(done)
            if done % args.save_every == 0 and done != end:
                common.save_checkpoint({"models": [m.state_dict() for m in models],
                                        "opts": [o.state_dict() for o in opts], "step": done,
                                        "torch_rng": torch.get_rng_state(), "history": history}, state_path)
    for m, sp in zip(models, specs):  # final weights, for the non-terminal probe of the students
        common.save_checkpoint({"model": m.state_dict()}, student_path(folder, name, label(sp), sp["lr"]))
    result = {sp["name"]: {"method": sp["method"], "lr": sp["lr"], "stage1": sp.get("stage1"),
                           "acc": history["acc"][-1][i], "curve": [row[i] for row in history["acc"]]}
              for i, sp in enumerate(specs)}
    result["_steps"] = history["steps"]
    common.write_json(result, done_path)
    if os.path.exists(state_path):
        os.remove(state_path)
    best = {}
    for sp, a in zip(specs, history["acc"][-1]):
        best[label(sp)] = max(best.get(label(sp), 0), a)
    print(f"students {name}: " + "  ".join(f"{m} {a:.3f}" for m, a in best.items()) +
          f"  ({time.time() - t0:.0f}s)", flush=True)
    return result


def student_path(folder, group, method, lr):
    return os.path.join(folder, f"{group}-{method}-lr{lr:g}.pt")


def specs_for(methods, lrs, stage1):
    return [{"method": m, "lr": lr, "stage1": stage1 if m == "two_shot" else None, "name": f"{m}/lr={lr:g}"}
            for m in methods for lr in lrs]


def sweep_specs(stage1s, lr):
    """The (2,T) sweep's students (Fig. 4 right): two_shot with other stage-1 checkpoints."""
    return [{"method": "two_shot", "lr": lr, "stage1": ck, "name": f"two_shot@{ck}/lr={lr:g}"} for ck in stage1s]


def label(spec):
    return spec["name"].split("/")[0]  # the method, or two_shot@<stage-1 step> for the sweep


def run_students(args, level, methods, stage1, heldout, sweep=()):
    """Every budget x seed; each method at its best lr (highest mean final accuracy over seeds), the paper's
    protocol. `sweep`: stage-1 checkpoints of the (2,T) sweep at the smallest budget, at the two_shot's best
    lr; with one lr they join that budget's groups, sharing batches and teacher passes (same numbers, faster).
    Returns (students {method: [{budget, seed, acc, lr(, level)}]}, per-lr table, curves, sweep rows)."""
    students, by_lr, curves = {m: [] for m in methods}, {}, {}
    b0, joined = args.budget_list[0], list(sweep) if len(args.lrs) == 1 else []
    jobs = [(level, budget, seed, specs_for(methods, args.lrs, clamp_to_horizon(args, level, budget, stage1)
                                            if "two_shot" in methods else None)
             + (sweep_specs(joined, args.lrs[0]) if budget == b0 else []), "")
            for budget in args.budget_list for seed in args.seed_list]
    done = dict(zip([(j[1], j[2]) for j in jobs], parallel_map(args, group_job, jobs, heldout)))
    for budget in args.budget_list:
        groups = {seed: done[(budget, seed)] for seed in args.seed_list}
        for m in methods:
            means = {lr: sum(groups[s][f"{m}/lr={lr:g}"]["acc"] for s in args.seed_list) / len(args.seed_list)
                     for lr in args.lrs}
            best = max(args.lrs, key=lambda lr: means[lr])
            by_lr.setdefault(m, {})[str(budget)] = {f"{lr:g}": means[lr] for lr in args.lrs}
            for s in args.seed_list:
                r = groups[s][f"{m}/lr={best:g}"]
                entry = {"budget": budget, "seed": s, "acc": r["acc"], "lr": best}
                if level is not None:
                    entry["level"] = level
                if m == "two_shot":
                    entry["stage1"] = r["stage1"]
                students[m].append(entry)
                curves.setdefault(m, {}).setdefault(str(budget), {"steps": groups[s]["_steps"], "acc": []})
                curves[m][str(budget)]["acc"].append(r["curve"])
    rows = []
    if sweep:
        lr = next(e["lr"] for e in students["two_shot"] if e["budget"] == b0)
        rows = ([{"stage1": ck, "seed": s, "acc": done[(b0, s)][f"two_shot@{ck}/lr={lr:g}"]["acc"], "lr": lr}
                 for ck in joined for s in args.seed_list] if joined else
                run_two_shot_sweep(args, level, lr, heldout, sweep))
    return students, by_lr, curves, rows


def group_job(args, job, heldout=None):
    level, budget, seed, specs, tag = job
    return train_group(args, level, budget, seed, specs, heldout or eval_set(args, level), tag)


def _worker_init(threads):
    torch.set_num_threads(threads)


def _worker_call(payload):
    fn, args, item = payload
    return fn(args, item)


def parallel_map(args, fn, items, heldout=None):
    """fn(args, item) for every item: in this process, or in --workers spawned processes (independent jobs
    that write their own files; results are the same either way, each job being seeded by itself)."""
    if args.workers == 1 or len(items) < 2 or not args.device.startswith("cpu"):
        return [fn(args, item, heldout) if heldout is not None else fn(args, item) for item in items]
    import multiprocessing as mp
    with mp.get_context("spawn").Pool(min(args.workers, len(items)), _worker_init, (1,)) as pool:
        return pool.map(_worker_call, [(fn, args, item) for item in items], chunksize=1)


def clamp_to_horizon(args, level, budget, step):
    saved = horizon_steps(saved_steps(args.teacher_dir or args.out, level), args, budget)
    return max(s for s in saved if s <= step)


def run_two_shot_sweep(args, level, lr, heldout, candidates):
    """Curriculum figure, right panel: final accuracy of (2,T)-progressive students against the stage-1
    checkpoint, at the smallest budget and the two_shot's best learning rate (found first, with a grid)."""
    budget = args.budget_list[0]
    jobs = [(level, budget, seed, specs_for(["two_shot"], [lr], ck), f"-sweep{ck}")
            for ck in candidates for seed in args.seed_list]
    results = parallel_map(args, group_job, jobs, heldout)
    return [{"stage1": job[3][0]["stage1"], "seed": job[2], "acc": r[f"two_shot/lr={lr:g}"]["acc"], "lr": lr}
            for job, r in zip(jobs, results)]


def sweep_candidates(args, level, phases, chosen):
    """Checkpoints before, around and after the drop (the final one is one-shot, already trained)."""
    saved = horizon_steps(saved_steps(args.teacher_dir or args.out, level), args, args.budget_list[0])
    if args.two_shot_sweep == "none":
        return []
    if args.two_shot_sweep not in ("auto", "drop"):
        wanted = common.parse_list(args.two_shot_sweep, int, "--two_shot_sweep")
        bad = [w for w in wanted if w not in saved]
        if bad:
            fail("--two_shot_sweep", f"{bad} are not teacher checkpoints within the smallest budget's horizon")
        return [w for w in wanted if w != chosen]
    final = saved[-1]
    marks = [chosen / 2, chosen * 1.5, chosen * 3] if args.two_shot_sweep == "auto" else []
    if phases:
        marks += [phases["drop_start"], phases["drop_end"]]
    near = {min(saved, key=lambda s: abs(s - t)) for t in marks}
    return sorted(s for s in near if s not in (chosen, final, 0))


# ----------------------------------------------------------------------------------------------------
# 7. Probes. M_robust / M_close (Sec. 4.2, Fig. 4): at a masked position p, how far the
# prediction moves when the n-gram window around p is also masked (robust) or when only that window is kept
# (close). The non-terminal probe (Sec. 4.2): a linear read-out of each token's ancestors.

@torch.no_grad()
def ngram_probe(model, ids, key_mask, positions, windows, mask_id, hide_masked=True, chunk=512):
    """ids (N,T) clean sequences, key_mask (N,T) True at real tokens (None = all), positions: p values (a
    sequence is skipped at p if p is not a real token), windows {name: (left, right)}. Base input: p masked
    (and hidden as a key if hide_masked, the training convention). M_robust: also mask [p-left, p+right];
    M_close: mask everything outside it. Returns {name: {"robust"|"close": {"l1"|"tv": {"median", "q25",
    "q75", "mean"}}, "count": number of (sequence, p) pairs}} with L1 = ||P(. | perturbed)[p] - P(. | base)[p]||_1
    over the whole vocabulary (the official code's number) and TV = L1 / 2."""
    was = model.training
    model.eval()
    N, T = ids.shape
    key_mask = torch.ones_like(ids, dtype=torch.bool) if key_mask is None else key_mask
    d = {name: {"robust": [], "close": []} for name in windows}
    for p in positions:
        keep = key_mask[:, p]
        x, km = ids[keep], key_mask[keep]
        if len(x) == 0:
            continue
        variants = []

        def hide(v_ids, v_km, where):
            v_ids = v_ids.clone()
            v_ids[:, where] = mask_id
            if hide_masked:
                v_km = v_km.clone()
                v_km[:, where] = False
            return v_ids, v_km

        variants.append(hide(x, km, slice(p, p + 1)))
        for left, right in windows.values():
            lo, hi = max(0, p - left), min(T, p + right + 1)
            variants.append(hide(*variants[0], slice(lo, hi)))
            outside = torch.ones(T, dtype=torch.bool, device=x.device)
            outside[lo:hi] = False
            variants.append(hide(*variants[0], outside))
        allx, allk = torch.cat([v[0] for v in variants]), torch.cat([v[1] for v in variants])
        probs = torch.cat([torch.softmax(model(allx[i:i + chunk], allk[i:i + chunk])[:, p].float(), -1)
                           for i in range(0, len(allx), chunk)]).view(len(variants), len(x), -1)
        for w, name in enumerate(windows):
            d[name]["robust"].append((probs[1 + 2 * w] - probs[0]).abs().sum(-1))
            d[name]["close"].append((probs[2 + 2 * w] - probs[0]).abs().sum(-1))
    model.train(was)
    out = {}
    for name in windows:
        out[name] = {"count": int(sum(len(v) for v in d[name]["robust"]))}
        for kind in ("robust", "close"):
            l1 = torch.cat(d[name][kind]).double().cpu() if d[name][kind] else torch.zeros(0, dtype=torch.float64)
            q = quartiles(l1)
            out[name][kind] = {"l1": q, "tv": {k: v / 2 for k, v in q.items()}}
    return out


def quartiles(values):
    if len(values) == 0:
        return dict.fromkeys(("median", "q25", "q75", "mean"), float("nan"))
    q = torch.quantile(values, torch.tensor([0.25, 0.5, 0.75], dtype=values.dtype)).tolist()
    return {"median": q[1], "q25": q[0], "q75": q[2], "mean": values.mean().item()}


def features(model, ids, key_mask, batch):
    """Last-layer hidden states of the unmasked input, frozen."""
    was = model.training
    model.eval()
    with torch.no_grad():
        hs = [model(ids[i:i + batch], key_mask[i:i + batch], return_hidden=True)[1] for i in range(0, len(ids), batch)]
    model.train(was)
    return torch.cat(hs)


def nt_probe(train_feats, train_labels, eval_feats, eval_labels, n_classes, steps=200, lr=1e-2, seed=0):
    """Linear probe per depth on frozen features: feats (N, d) of real tokens, labels (N, D) class index of the
    depth-d ancestor. Full-batch Adam on standardised features; returns eval accuracy per depth."""
    g = torch.Generator().manual_seed(seed)
    mu, sd = train_feats.mean(0), train_feats.std(0).clamp(min=1e-6)
    xtr, xev = (train_feats - mu) / sd, (eval_feats - mu) / sd
    total = sum(n_classes)
    W = (torch.randn(xtr.shape[1], total, generator=g, dtype=xtr.dtype) * 0.01).to(xtr.device).requires_grad_()
    b = torch.zeros(total, device=xtr.device, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=lr)
    bounds = np.cumsum([0] + list(n_classes))
    for _ in range(steps):
        opt.zero_grad()
        z = xtr @ W + b
        loss = sum(F.cross_entropy(z[:, bounds[k]:bounds[k + 1]], train_labels[:, k]) for k in range(len(n_classes)))
        loss.backward()
        opt.step()
    with torch.no_grad():
        z = xev @ W + b
        return [(z[:, bounds[k]:bounds[k + 1]].argmax(-1) == eval_labels[:, k]).float().mean().item()
                for k in range(len(n_classes))]


class NTData:
    """Fixed train / eval sequences for the NT probe: real tokens' ancestor classes per depth."""

    def __init__(self, args):
        g = grammar(args.grammar)
        self.n_classes = g["n_classes"]
        self.sets = []
        for stream, n in ((5, args.nt_train), (6, args.nt_eval)):
            ids, anc, _ = fixed_set(args, stream, n)
            real = anc[..., 0] >= 0
            labels = torch.from_numpy(g["class_of"][anc[real].numpy()])
            self.sets.append((ids.to(args.device), (ids != PAD).to(args.device), real.to(args.device),
                              labels.to(args.device)))

    def accuracy(self, model, args):
        (xa, ka, ra, la), (xb, kb, rb, lb) = self.sets
        fa = features(model, xa, ka, args.eval_batch)[ra]
        fb = features(model, xb, kb, args.eval_batch)[rb]
        return nt_probe(fa, la, fb, lb, self.n_classes, steps=args.nt_steps)

    def majority(self):
        """Accuracy of always predicting the most frequent class (train set) per depth: the floor."""
        (_, _, _, la), (_, _, _, lb) = self.sets
        return [(lb[:, k] == torch.bincount(la[:, k]).argmax()).float().mean().item() for k in range(la.shape[1])]


def run_probes(args, level):
    """M_robust / M_close (MLM only) and the NT probe on every --probe_every-th teacher checkpoint."""
    run = args.teacher_dir or args.out
    steps = saved_steps(run, level)[::args.probe_every]
    if steps[-1] != saved_steps(run, level)[-1]:
        steps.append(saved_steps(run, level)[-1])
    t0 = time.time()
    chunks = [steps[i::args.workers] for i in range(min(args.workers, len(steps)))]
    parts = {}
    for part in parallel_map(args, probe_job, [(level, c) for c in chunks]):
        parts.update({int(k): v for k, v in part.items()})
    res = {"steps": steps, "m_robust": {}, "m_close": {}, "nt": {"acc": [], "majority": NTData(args).majority()}}
    for step in steps:
        r = parts[step]
        for kind, key in (("robust", "m_robust"), ("close", "m_close")):
            for name in (args.window_dict if args.objective == "mlm" else {}):
                slot = res[key].setdefault(name, {m: {q: [] for q in ("median", "q25", "q75", "mean")}
                                                  for m in ("l1", "tv")})
                for m in ("l1", "tv"):
                    for q in slot[m]:
                        slot[m][q].append(r["ngram"][name][kind][m][q])
        res["nt"]["acc"].append(r["nt"])
    print(f"probes: {len(steps)} teacher checkpoints in {time.time() - t0:.0f}s", flush=True)
    return res


def probe_job(args, job):
    """Probe the teacher checkpoints `steps` of one level: {step: {"ngram": ..., "nt": [acc per depth]}}."""
    level, steps = job
    folder = teacher_folder(args.teacher_dir or args.out, level)
    ids, _, _ = fixed_set(args, 4, args.probe_size)
    ids, km = ids.to(args.device), (ids != PAD).to(args.device)
    nt = NTData(args)
    model = make_model(args, "teacher", 0)
    out = {}
    for step in steps:
        model.load_state_dict(load_teacher_file(folder, step, args.device)["model"])
        out[step] = {"nt": nt.accuracy(model, args)}
        if args.objective == "mlm":
            out[step]["ngram"] = ngram_probe(model, ids, km, args.position_list, args.window_dict, MASK,
                                             hide_masked=bool(args.hide_masked_keys), chunk=args.eval_batch)
    return out


def probe_students(args, level, students, nt):
    """NT probe accuracy per depth of the final students (smallest budget, each method at its best lr)."""
    budget, out = args.budget_list[0], {}
    folder = os.path.join(args.out, "ckpt", "students")
    model = make_model(args, "student", 0)
    for m, entries in students.items():
        accs = []
        for e in entries:
            if e["budget"] != budget:
                continue
            path = student_path(folder, group_name(budget, e["seed"], level), m, e["lr"])
            model.load_state_dict(common.load_checkpoint(path, args.device)["model"])
            accs.append(nt.accuracy(model, args))
        out[m] = [sum(a[k] for a in accs) / len(accs) for k in range(len(accs[0]))]
    return out


# ----------------------------------------------------------------------------------------------------
# 8. Results: table, checks and figures.

def summarize(entries, key="acc"):
    m, sd = common.mean_std([e[key] for e in entries])
    return f"{m:.3f} ± {sd:.3f}"


def print_table(results, args):
    for lk, res in results["levels"].items():
        students = res.get("students", {})
        teacher = res.get("teacher")
        if not students and not teacher:
            continue
        headers = ["method"] + [f"budget {b}" for b in args.budget_list]
        rows = []
        if teacher:
            rows.append(["teacher"] + [f"{teacher_acc_at(args, teacher, b):.3f}" for b in args.budget_list])
        for m, entries in students.items():
            row = [m]
            for b in args.budget_list:
                e = [x for x in entries if x["budget"] == b]
                row.append(summarize(e) + f" (lr {e[0]['lr']:g})" if e else "-")
            rows.append(row)
        title = "masked-token accuracy" if lk == "mlm" else f"boundary accuracy, level {lk}"
        print(f"\n{title} (mean ± std over seeds {args.seed_list}; each method at its best lr)")
        print(common.format_table(headers, rows))


def teacher_acc_at(args, teacher, budget):
    """The teacher 'at budget B' is its checkpoint at the horizon min(speed x B, last step)."""
    steps = teacher["steps"]
    s = max(x for x in steps if x <= min(args.speed * budget, steps[-1]))
    return teacher["val_acc"][steps.index(s)]


def claim_checks(res, args):
    """The README's acceptance checks, computed from this run."""
    checks = {}
    st, t, probe = res.get("students", {}), res.get("teacher"), res.get("probe")
    def mean(m, b):
        accs = [e["acc"] for e in st[m] if e["budget"] == b]
        return sum(accs) / len(accs)
    b0 = args.budget_list[0]
    if "progressive" in st and "ce" in st:
        checks["progressive_minus_ce_smallest_budget"] = mean("progressive", b0) - mean("ce", b0)
        checks["progressive_beats_ce_by_2pts"] = checks["progressive_minus_ce_smallest_budget"] >= 0.02
        checks["progressive_ge_ce_every_budget"] = all(mean("progressive", b) >= mean("ce", b)
                                                       for b in args.budget_list)
    if "progressive" in st and "oneshot" in st:
        checks["progressive_ge_oneshot_every_budget"] = all(mean("progressive", b) >= mean("oneshot", b)
                                                            for b in args.budget_list)
    if "two_shot" in st and "oneshot" in st:
        checks["two_shot_minus_oneshot_smallest_budget"] = mean("two_shot", b0) - mean("oneshot", b0)
        checks["two_shot_beats_oneshot"] = checks["two_shot_minus_oneshot_smallest_budget"] > 0
    ph = res.get("phases")
    if t and ph:
        sl = ph["slopes"]  # mean loss change per step in each phase
        # phase 3 must be there: the run goes on for two checkpoints past the drop and the loss still falls
        checks["three_phases"] = bool(sl["drop"] < 0 and abs(sl["plateau"]) < abs(sl["drop"]) / 3
                                      and ph["drop_end"] < t["steps"][-2] and sl["decay"] < 0
                                      and abs(sl["decay"]) < abs(sl["drop"]) / 3)
    if probe and probe.get("m_robust") and ph:
        name = next(iter(probe["m_robust"]))
        med = probe["m_robust"][name]["l1"]["median"]
        steps = probe["steps"]
        peak = int(np.nanargmax(med))
        checks["mrobust_peak_step"] = steps[peak]
        checks["mrobust_peak_in_drop"] = bool(ph["drop_start"] <= steps[peak] <= ph["drop_end"])
        checks["mrobust_peak_over_final"] = med[peak] / max(med[-1], 1e-12)
        checks["mrobust_falls_10x"] = checks["mrobust_peak_over_final"] >= 10
        # M_robust follows the teacher's loss more than its step (README): where the drop stops and where
        # the reliance peaks, both read on the loss
        loss_at = dict(zip(t["steps"], t["val_loss"]))
        checks["mrobust_peak_loss"] = loss_at.get(steps[peak])
        checks["drop_end_loss"] = loss_at.get(ph["drop_end"])
    return checks


COLORS = {"teacher": "k", "ce": "tab:blue", "oneshot": "tab:orange", "progressive": "tab:green",
          "two_shot": "tab:red"}


def make_figures(results, args):
    plt = common.plt()
    levels = [k for k, r in results["levels"].items() if r.get("students") or r.get("teacher")]
    if levels:  # Fig. 1 right (or its boundary analogue, one panel per level)
        fig, axes = plt.subplots(1, len(levels), figsize=(5.5 * len(levels), 4), squeeze=False)
        for ax, lk in zip(axes[0], levels):
            res = results["levels"][lk]
            if res.get("teacher"):
                ax.plot(args.budget_list, [teacher_acc_at(args, res["teacher"], b) for b in args.budget_list],
                        "--o", color="k", label="teacher")
            for m, entries in res.get("students", {}).items():
                ys = [[e["acc"] for e in entries if e["budget"] == b] for b in args.budget_list]
                mean = [sum(y) / len(y) for y in ys]
                ax.errorbar(args.budget_list, mean, yerr=[[a - min(y) for a, y in zip(mean, ys)],
                                                          [max(y) - a for a, y in zip(mean, ys)]],
                            fmt="-o", capsize=3, color=COLORS[m], label=m)
            title = f"BERT on {args.grammar}" if lk == "mlm" else f"GPT-style on {args.grammar}, level {lk}"
            ax.set(xlabel="training steps (budget)", ylabel="top-1 accuracy" + (" (masked)" if lk == "mlm" else
                                                                                 " (span ends)"), title=title)
            ax.set_xticks(args.budget_list)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "fig1_accuracy.png" if args.objective == "mlm" else
                                 "fig_boundary_accuracy.png"), dpi=120)
        plt.close(fig)
    for lk in levels:
        res = results["levels"][lk]
        t, ph, probe = res.get("teacher"), res.get("phases"), res.get("probe")
        if not t:
            continue
        panels = 1 + bool(probe and probe.get("m_robust")) + bool(res.get("two_shot_sweep"))
        fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
        # teacher steps on a log axis, as in the paper's Fig. 4 (step 0 left out), so the phases are visible
        ax = axes[0][0]
        first = t["steps"][min(1, len(t["steps"]) - 1)]
        ax.plot(t["steps"][1:], t["val_loss"][1:], "k-", lw=1.2)
        if ph:
            for (a, b), c, lab in (((first, ph["drop_start"]), "tab:gray", "1"), ((ph["drop_start"], ph["drop_end"]),
                                   "tab:red", "2"), ((ph["drop_end"], t["steps"][-1]), "tab:blue", "3")):
                ax.axvspan(a, b, color=c, alpha=0.12, lw=0)
                ax.text((a * b) ** 0.5, max(t["val_loss"][1:]) * 0.97, lab, ha="center", fontsize=10)
            ax.axvline(ph["inflection"], color="tab:red", ls="--", lw=1, label=f"inflection {ph['inflection']}")
        for b in args.budget_list:
            ax.plot(b, t["val_loss"][t["steps"].index(max(s for s in t["steps"] if s <= b))], "v", color="tab:green")
        ax.plot(t["steps"][1:], t["val_loss"][1:], "|", color="gray", ms=4, label="checkpoints")
        ax.set(xscale="log", xlabel="teacher steps", ylabel="validation loss", title="teacher's loss, three phases")
        ax.legend(fontsize=8)
        k = 1
        if probe and probe.get("m_robust"):
            ax = axes[0][k]
            k += 1
            name = next(iter(probe["m_robust"]))
            q = probe["m_robust"][name]["l1"]
            ax.plot(probe["steps"][1:], q["median"][1:], "-", color="tab:purple", label=f"median M_robust ({name})")
            ax.fill_between(probe["steps"][1:], q["q25"][1:], q["q75"][1:], color="tab:purple", alpha=0.2, lw=0,
                            label="quartiles")
            peak = int(np.nanargmax(q["median"]))
            ax.plot(probe["steps"][peak], q["median"][peak], "*", color="tab:purple", ms=10,
                    label=f"maximum, step {probe['steps'][peak]}")
            ax.set(xscale="log", xlabel="teacher steps", ylabel="L1 distance", yscale="log", title=f"M_robust, {name}")
            if ph:
                ax.axvspan(ph["drop_start"], ph["drop_end"], color="tab:red", alpha=0.12, lw=0, label="drop (phase 2)")
                ax.axvline(ph["inflection"], color="tab:red", ls="--", lw=1)
            ax.legend(fontsize=8)
        sweep = res.get("two_shot_sweep")
        if sweep:
            ax = axes[0][k]
            pts = {}
            for e in sweep + [dict(e, stage1=e.get("stage1")) for e in res["students"].get("two_shot", [])
                              if e["budget"] == args.budget_list[0]]:
                pts.setdefault(e["stage1"], []).append(e["acc"])
            one = [e["acc"] for e in res["students"].get("oneshot", []) if e["budget"] == args.budget_list[0]]
            xs = sorted(pts)
            ax.errorbar(xs, [sum(pts[x]) / len(pts[x]) for x in xs],
                        yerr=[[sum(pts[x]) / len(pts[x]) - min(pts[x]) for x in xs],
                              [max(pts[x]) - sum(pts[x]) / len(pts[x]) for x in xs]], fmt="-o", capsize=3,
                        color="tab:red", label="(2,T)-progressive")
            if one:
                ax.axhline(sum(one) / len(one), color="tab:orange", ls=":", label="one-shot")
            ax.set(xlabel="stage-1 teacher checkpoint", ylabel="final accuracy",
                   title=f"(2,T)-progressive, budget {args.budget_list[0]}")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "fig_curriculum.png" if lk == "mlm" else f"fig_curriculum_level{lk}.png"),
                    dpi=120)
        plt.close(fig)
        if probe:
            make_probe_figure(plt, probe, res, args, lk)


def make_probe_figure(plt, probe, res, args, lk):
    against_loss = bool(probe.get("m_robust") and res.get("teacher"))
    panels = (2 if probe.get("m_robust") else 0) + 1 + against_loss
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    k = 0
    for key in ("m_robust", "m_close"):
        if probe.get(key):
            ax = axes[0][k]
            k += 1
            for name, q in probe[key].items():
                ax.plot(probe["steps"][1:], q["l1"]["median"][1:], label=name)
            ax.set(xscale="log", xlabel="teacher steps", ylabel="median L1", yscale="log",
                   title=key.replace("m_", "M_"))
            ax.legend(fontsize=8)
    ax = axes[0][k]
    acc = np.array(probe["nt"]["acc"])
    for d in range(1, acc.shape[1] - 1):
        line, = ax.plot(probe["steps"][1:], acc[1:, d], label=f"depth {d}")
        ax.axhline(probe["nt"]["majority"][d], color=line.get_color(), ls=":", lw=0.8)
    ax.set(xscale="log", xlabel="teacher steps", ylabel="probe accuracy",
           title="non-terminal probe (dotted: majority)")
    ax.legend(fontsize=8)
    if against_loss:  # the n-gram reliance read against the teacher's loss, training running left to right
        ax = axes[0][k + 1]
        loss_at = dict(zip(res["teacher"]["steps"], res["teacher"]["val_loss"]))
        loss = [loss_at[s] for s in probe["steps"][1:]]
        for name, q in probe["m_robust"].items():
            ax.plot(loss, q["l1"]["median"][1:], ".-", ms=3, label=name)
        ph = res.get("phases")
        if ph:
            ax.axvspan(loss_at[ph["drop_end"]], loss_at[ph["drop_start"]], color="tab:red", alpha=0.12, lw=0,
                       label="drop (phase 2)")
        ax.set(yscale="log", xlabel="teacher's validation loss", ylabel="median L1",
               title="M_robust against the teacher's loss")
        ax.invert_xaxis()
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "fig_probes.png" if lk == "mlm" else f"fig_probes_level{lk}.png"), dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------
# 9. Flag checks: every check that can fail runs before anything is written.

def validate(args):
    """Every check that can fail runs before anything is written."""
    common.check_finite_flags(args)  # nan or inf in any float flag: exit 2 before anything else
    common.check_positive(args, ["layers", "head_dim", "teacher_heads", "student_heads", "max_len", "batch",
                                 "teacher_batch", "teacher_steps", "ckpt_every", "eval_size", "eval_every",
                                 "eval_batch", "probe_size", "probe_every", "nt_train", "nt_eval", "nt_steps",
                                 "teacher_lr", "temperature", "speed", "workers"])
    common.check_range(args, {"crop": "[0, inf]", "mask_rate": "[0, 1]", "dropout": "[0, 1)", "warmup": "[0, 1]",
                              "two_shot_frac": "[0, 1]", "clip": "[0, inf]", "threads": "[0, inf]"})
    if args.max_steps is not None:
        common.check_positive(args, ["max_steps"])
    common.check_lr_seeds_betas(args)  # sets args.lrs, args.seed_list, args.beta_pair
    common.check_run_flags(args, eval_every_default=4)
    args.budget_list = sorted(set(common.parse_list(args.budgets, int, "--budgets")))
    if any(b < 1 for b in args.budget_list):
        fail("--budgets", f"budgets must be at least 1 step, got {args.budgets}")
    args.method_list = common.parse_list(args.methods, str, "--methods")
    bad = [m for m in args.method_list if m not in ("ce",) + DISTILL]
    if bad:
        fail("--methods", f"unknown {bad}; allowed: ce, oneshot, progressive, two_shot")
    g = grammar(args.grammar)
    args.level_list = common.parse_list(args.level, int, "--level")
    if any(not 1 <= lv < g["depth"] for lv in args.level_list):
        fail("--level", f"depths must be in 1..{g['depth'] - 1} (0 is the root, whose span is the sentence)")
    if args.objective == "mlm":
        args.level_list = [None]
    elif (args.preset == "cpu" and not args.teacher_lr_given and args.teacher_dir is None
          and min(args.level_list) < 3):  # a preset must not silently train a dead teacher
        fail("--level", f"at the cpu preset's --teacher_lr {args.teacher_lr:g} the teachers of levels 1 and 2 "
                        "collapse to a constant (README); use --level 3, or add --teacher_lr 1e-3 for levels 1 and 2")
    if not 0 <= args.subtree < g["depth"]:
        fail("--subtree", f"must be a depth in 0..{g['depth'] - 1} (0 = whole sentences), got {args.subtree}")
    if args.subtree and args.crop:
        fail("--crop", f"--subtree {args.subtree} trains on whole subtrees; it needs --crop 0, got {args.crop}")
    seq_len = args.crop or g["longest_at"][args.subtree] + 1
    if args.crop and args.crop > args.max_len:
        fail("--max_len", f"must be at least --crop ({args.crop}), got {args.max_len}")
    if not args.crop and seq_len > args.max_len:
        what = f"depth-{args.subtree} subtrees" if args.subtree else "sentences"
        fail("--max_len", f"{args.grammar} {what} reach {seq_len} tokens with BOS; got {args.max_len}")
    args.position_list = common.parse_list(args.probe_positions, int, "--probe_positions")
    args.window_dict = parse_windows(args.windows)
    for p in args.position_list:
        if not 1 <= p < seq_len:
            fail("--probe_positions", f"{p} is outside the sequences in use (1..{seq_len - 1}; "
                                      f"{'--crop' if args.crop else 'longest sequence'} = {seq_len})")
        for name, (left, right) in args.window_dict.items():
            if p - left < 0 or (args.crop and p + right >= args.crop):
                fail("--windows", f"window {name} ({left} left, {right} right) around position {p} leaves the "
                                  f"{seq_len}-token sequence; use smaller windows or other --probe_positions")
    if args.objective == "boundary" and args.auto_by == "mrobust":
        fail("--auto_by", "M_robust is a masked-prediction probe; use --auto_by loss with --objective boundary")
    if str(args.refresh) != "auto":  # 'auto' is resolved once the teacher's phases are known (run_level)
        if not (str(args.refresh).isdigit() and int(args.refresh) >= 1):
            fail("--refresh", f"expected a positive number of steps or 'auto', got {args.refresh!r}")
        args.refresh = int(args.refresh)
    if args.two_shot_sweep not in ("auto", "drop", "none"):
        common.parse_list(args.two_shot_sweep, int, "--two_shot_sweep")
    args.device = str(common.pick_device(args.device))
    if args.out is None:
        args.out = os.path.join("out", "pcfg", f"{args.preset}-{args.objective}-{args.mode}")
    if args.teacher_dir is not None:
        check_teacher_dir(args)
    else:
        for b in args.budget_list:
            if b > args.teacher_steps:
                fail("--budgets", f"budget {b} is larger than the teacher's run (--teacher_steps "
                                  f"{args.teacher_steps}); at budget B the students learn from the teacher's "
                                  f"first B x speed steps")
        if args.ckpt != "auto" and int(args.ckpt) not in planned_steps(args.teacher_steps, args.ckpt_every):
            fail("--ckpt", f"{args.ckpt} is not a saved step (multiples of --ckpt_every={args.ckpt_every} "
                           f"and the last step {args.teacher_steps})")


def parse_windows(text):
    out = {}
    for item in common.parse_list(text, str, "--windows"):
        parts = item.split(":")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            fail("--windows", f"expected name:left:right (e.g. 3gram:1:1), got {item!r}")
        out[parts[0]] = (int(parts[1]), int(parts[2]))
    return out


TEACHER_KEYS = ["objective", "grammar", "crop", "subtree", "max_len", "layers", "head_dim", "teacher_heads",
                "mask_rate", "hide_masked_keys"]
# how a teacher was trained: free to differ from this run's flags, so its own values go into results.json
TEACHER_TRAINING = ["teacher_seed", "teacher_lr", "teacher_batch", "teacher_steps", "teacher_schedule", "warmup",
                    "ckpt_every"]


def check_teacher_dir(args):
    """--teacher_dir must hold a teacher made for the same data and sizes (per level for boundary)."""
    d = args.teacher_dir
    if not os.path.isdir(d):
        fail("--teacher_dir", f"{d} does not exist")
    cfg_path = os.path.join(d, "config.json")
    if not os.path.exists(cfg_path):
        fail("--teacher_dir", f"{d} holds no config.json (expected the --out folder of an earlier run)")
    cfg = common.read_json(cfg_path)
    diff = [f"{k}={cfg.get(k)!r} (here {getattr(args, k)!r})" for k in TEACHER_KEYS if cfg.get(k) != getattr(args, k)]
    if diff:
        fail("--teacher_dir", f"{d} was made for another setting: " + ", ".join(diff))
    for level in args.level_list:
        steps = saved_steps(d, level)
        if not steps or 0 not in steps:
            fail("--teacher_dir", f"{d} holds no teacher checkpoints in {teacher_folder(d, level)}")
        for b in args.budget_list:
            if b > steps[-1]:
                fail("--budgets", f"budget {b} is larger than the teacher's run in {d} ({steps[-1]} steps)")
        if args.ckpt != "auto" and int(args.ckpt) not in steps:
            fail("--ckpt", f"{args.ckpt} is not a checkpoint in {teacher_folder(d, level)}")


# ----------------------------------------------------------------------------------------------------
# 10. Main: teacher -> probes -> students -> results.

def config_of(args):
    skip = {"resume", "halt_at", "teacher_lr_given", "lrs", "seed_list", "beta_pair", "budget_list",
            "method_list", "level_list", "position_list", "window_dict", "threads"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def inflection_of(res):
    """The teacher's inflection C1 (Fig. 4) and how it was found; --refresh auto and --ckpt auto use it."""
    if res.get("phases"):
        return res["phases"]["inflection"], "inflection of the teacher's loss"
    steps = res["teacher"]["steps"]
    return steps[len(steps) // 2], "middle checkpoint (too few checkpoints to find phases)"


def run_level(args, level):
    """Everything for one objective level (mlm: the one 'level' None)."""
    heldout = eval_set(args, level)
    res = {}
    mode = args.mode
    needs_teacher = mode != "ce"
    if needs_teacher and args.teacher_dir is None:
        train_teacher(args, level, heldout)
    if needs_teacher or args.teacher_dir:
        res["teacher"] = teacher_curve(args, level)
        res["phases"] = find_phases(res["teacher"]["steps"], res["teacher"]["val_loss"])
        if res["phases"]:
            ph = res["phases"]
            print(f"teacher phases: plateau from {ph['plateau_start']}, drop {ph['drop_start']}-{ph['drop_end']}, "
                  f"inflection {ph['inflection']}")
    wants_probe = mode in ("all", "probe") or (mode == "two_shot" and args.ckpt == "auto" and args.auto_by == "mrobust")
    if wants_probe:
        key = "probe" if level is None else f"probe_level{level}"
        path = os.path.join(args.out, key + ".json")
        if os.path.exists(path) and args.resume:
            res["probe"] = common.read_json(path)
        else:
            res["probe"] = run_probes(args, level)
            common.write_json(res["probe"], path)
    methods = {"all": args.method_list, "teacher": [], "probe": []}.get(mode, [mode])
    if "progressive" in methods and args.refresh == "auto":
        # our rule, inspired by the paper's refresh (1000 steps) equalling its teacher's C1 (Fig. 4): the first
        # checkpoint a progressive student sees is then the one that carries the n-gram curriculum
        refresh, how = inflection_of(res)
        args = argparse.Namespace(**{**vars(args), "refresh": refresh})  # this level only; workers get it too
        res["refresh"], res["refresh_rule"] = refresh, how
        print(f"progressive: refresh every {refresh} steps ({how})")
    chosen = None
    if "two_shot" in methods:
        if args.ckpt != "auto":
            chosen, how = int(args.ckpt), "--ckpt"
        elif args.auto_by == "mrobust":
            probe = res["probe"]
            med = probe["m_robust"][next(iter(probe["m_robust"]))]["l1"]["median"]
            chosen, how = probe["steps"][int(np.nanargmax(med))], "peak of the median M_robust"
        else:
            chosen, how = inflection_of(res)
        res["two_shot_ckpt"], res["two_shot_rule"] = chosen, how
        print(f"two_shot: stage-1 checkpoint {chosen} ({how}) for {args.two_shot_frac:g} of each budget, "
              f"then the final one")
    if methods:
        cands = []
        if mode == "all" and "two_shot" in methods:
            cands = sweep_candidates(args, level, res.get("phases"), clamp_to_horizon(args, level, args.budget_list[0],
                                                                                       chosen))
        students, by_lr, curves, sweep = run_students(args, level, methods, chosen, heldout, cands)
        res["students"], res["by_lr"], res["curves"] = students, by_lr, curves
        if cands:
            res["two_shot_sweep"] = sweep
        if mode == "all" and "probe" in res:
            res["probe"]["students_nt"] = probe_students(args, level, students, NTData(args))
    res["checks"], res["measured"] = common.split_checks(claim_checks(res, args))
    return res


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    common.prepare_run_dir(args.out, config_of(args), args.resume)
    results = {"config": config_of(args), "levels": {}}
    t_start = time.time()
    for level in args.level_list:
        results["levels"]["mlm" if level is None else str(level)] = run_level(args, level)
    # the keys the issue lists, at the top level: teacher, students (a list per mode), probe
    flat = {"config": results["config"]}
    first = results["levels"][next(iter(results["levels"]))]
    if args.objective == "mlm":
        flat.update({k: v for k, v in first.items()})
        if "teacher" in flat:
            flat["teacher"] = dict(flat["teacher"], phases=first.get("phases"))
    else:
        flat["teacher"] = {lk: dict(r["teacher"], phases=r.get("phases")) for lk, r in results["levels"].items()
                           if "teacher" in r}
        flat["students"] = {}
        for r in results["levels"].values():
            for m, entries in r.get("students", {}).items():
                flat["students"].setdefault(m, []).extend(entries)
        flat["probe"] = {lk: r["probe"] for lk, r in results["levels"].items() if "probe" in r}
        flat["checks"] = {lk: r["checks"] for lk, r in results["levels"].items()}
        flat["measured"] = {lk: r["measured"] for lk, r in results["levels"].items()}
        flat["levels"] = results["levels"]
    if args.teacher_dir:
        cfg = common.read_json(os.path.join(args.teacher_dir, "config.json"))
        flat["teacher_config"] = {k: cfg.get(k) for k in TEACHER_TRAINING}
        other = [f"--{k} {cfg.get(k)!r}" for k in TEACHER_TRAINING if cfg.get(k) != getattr(args, k)]
        if other:
            print(f"note: the teacher in {args.teacher_dir} was trained with {', '.join(other)}, not this run's flags; "
                  "results.json keeps its values as teacher_config")
    flat["wall_s"] = time.time() - t_start
    common.write_json(flat, os.path.join(args.out, "results.json"))
    print_table(results, args)
    for lk, r in results["levels"].items():
        if r["checks"]:
            print(f"\nchecks ({lk}):", r["checks"])
            print("measured:", {k: round(v, 4) if isinstance(v, float) else v for k, v in r["measured"].items()})
    make_figures(results, args)
    print(f"\nwrote {args.out}/results.json and figures in {time.time() - t_start:.0f}s")
    return flat


if __name__ == "__main__":
    main()
