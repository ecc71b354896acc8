"""PCFG: BERT-style masked prediction with progressive distillation and n-gram probes (Sec. 4).

A wide BERT teacher learns masked prediction on a context-free grammar (Allen-Zhu & Li). In the
sharp drop of its loss it leans on short n-grams (M_robust): a curriculum that a small student gets
from its intermediate checkpoints (progressive distillation), not from the final teacher (one-shot)
or the labels (CE). --objective boundary: GPT-style, next-token targets at span ends.

    python pcfg.py                                   # the CPU study: Fig. 1 right
    python docs/pcfg_extra.py out/pcfg/cpu-mlm-all   # its curriculum (Fig. 4) and probe figures
    python pcfg.py --objective boundary --preset paper --device cuda   # the GPT-style variant

Sections 0-5: the mechanism; 6: the engine (many students at once); 7-8: the study; 9: main.
To copy: this file plus common.py; needs torch, numpy and matplotlib.
"""
import argparse
import os
import sys
import time
from functools import lru_cache
from itertools import combinations

import numpy as np

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # before torch: same seed, same numbers on CPU
import common
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import fail

# --------------------------------------------------------------------------------------------------
# 0. Config: presets and flags (a flag given overrides its preset; checked in validate). Defaults:
# the paper's values that the cpu preset keeps (4 layers, head dim 8; 6% warmup, cosine, clip 1).
_PAPER = dict(  # the official code: HF BERT, 512 x full sentences, AdamW (0.9, 0.95)
    max_len=1024, teacher_heads=32, student_heads=8, dropout=0.1, batch=512, teacher_batch=512,
    teacher_lr=5e-3, lr_grid="1e-2,7.5e-3,5e-3,2.5e-3,1e-3", eval_size=4096, eval_every=200,
    probe_size=1024, nt_train=10240, nt_eval=4096, ckpt_every=200, temperature=1e-20,
    probe_positions=",".join(str(p) for p in range(30, 421, 30)))
_CPU = dict(teacher_heads=16, student_heads=4, dropout=0.0, batch=64, teacher_lr=3e-3,
            lr_grid="1e-2", temperature=1e-20, eval_size=1024, eval_every=50, probe_size=128,
            nt_train=256, nt_eval=256, workers=2)
_SMOKE = dict(grammar="cfg3b", layers=1, head_dim=4, teacher_heads=4, student_heads=2, batch=16,
              dropout=0.0, teacher_batch=16, teacher_lr=3e-3, temperature=1.0, teacher_steps=40,
              budgets="20,40", ckpt_every=10, refresh=10, eval_size=64, eval_every=10,
              probe_size=16, nt_train=32, nt_eval=32, nt_steps=20, seeds="0,1")
BOUNDARY_METHODS = "ce,oneshot,progressive"
PRESETS = {
    ("paper", "mlm"): dict(_PAPER, grammar="cfg3b", teacher_steps=16000,
                           budgets="2000,4000,8000,16000", refresh=1000, two_shot_sweep="auto"),
    ("paper", "boundary"): dict(_PAPER, grammar="cfg3f", teacher_steps=2000, budgets="1000",
                                refresh=200, speed=2.0, level="1,2,3", methods=BOUNDARY_METHODS),
    # depth-2 subtrees, teacher batch 256: the plateau, the gain, M_robust's rise and fall (docs/)
    ("cpu", "mlm"): dict(_CPU, grammar="cfg3b", subtree=2, max_len=73, teacher_batch=256,
                         teacher_steps=1000, budgets="600,1000", ckpt_every=10, refresh="auto",
                         probe_every=2, probe_positions="8,16,24,32", two_shot_sweep="drop"),
    # cfg3f and speed 2 as the paper's scripts; level 3 (1 and 2 stay on a plateau at this scale)
    ("cpu", "boundary"): dict(_CPU, grammar="cfg3f", crop=64, max_len=64, teacher_batch=64,
                              teacher_steps=2000, budgets="500,1000", ckpt_every=50, refresh=200,
                              speed=2.0, probe_positions="8,16,24,32,40,48",
                              methods=BOUNDARY_METHODS),
    ("smoke", "mlm"): dict(_SMOKE, crop=16, max_len=16, lr_grid="3e-3,1e-2",
                           probe_positions="4,8,11", two_shot_sweep="auto"),
    ("smoke", "boundary"): dict(_SMOKE, crop=24, max_len=24, lr_grid="3e-3", level="2,3",
                                probe_positions="4,8,12", methods=BOUNDARY_METHODS),
}
MODES = ["all", "teacher", "probe", "ce", "oneshot", "progressive", "two_shot"]
WINDOWS = "3gram:1:1,5gram:2:2,4gram:2:1,2gram:1:0"  # (left, right) context, as the official probes
EVAL_BATCH = 256  # sequences per forward pass in evaluation and probes
# how a reused teacher was trained: may differ from this run's flags (results.json keeps its own)
TEACHER_TRAINING = ["teacher_seed", "teacher_lr", "teacher_batch", "teacher_steps",
                    "teacher_schedule", "warmup", "ckpt_every"]
COLORS = dict(ce="tab:blue", oneshot="tab:orange", progressive="tab:green", two_shot="tab:red")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument  # in order: task, models, teacher, students, distillation, probes, run
    a("--mode", default="all", choices=MODES, help="what to run")
    a("--objective", default="mlm", choices=["mlm", "boundary"], help="masked or span-end targets")
    a("--preset", default="cpu", choices=["cpu", "paper", "smoke"], help="the flags' defaults")
    a("--grammar", choices=sorted(GRAMMARS), help="which cfg3 grammar (Allen-Zhu & Li)")
    a("--crop", type=int, default=0, help="train on random crops of this many tokens; 0 = whole")
    a("--subtree", type=int, default=0, help="D > 0: [BOS] + a random depth-D span (--crop 0)")
    a("--mask_rate", type=float, default=0.3, help="fraction of positions predicted (80/10/10)")
    a("--hide_masked_keys", type=int, default=1, choices=[0, 1], help="1: as the official code")
    a("--level", type=str, default="3", help="boundary: depth(s) whose span ends carry labels")
    a("--cache_data", type=int, default=0, choices=[0, 1], help="1: store the batches in <out>")
    a("--layers", type=int, default=4, help="encoder layers (teacher and student)")
    a("--head_dim", type=int, default=8, help="attention head dimension")
    a("--teacher_heads", type=int, help="teacher heads (width = heads x head_dim)")
    a("--student_heads", type=int, help="student heads")
    a("--max_len", type=int, help="learned position embeddings (>= the longest input)")
    a("--dropout", type=float, help="dropout (BERT default 0.1)")
    a("--teacher_batch", type=int, help="sequences per teacher step (AdamW, wd 0; the paper: 512)")
    a("--teacher_lr", type=float, help="teacher learning rate")
    a("--teacher_steps", type=int, help="teacher optimizer steps")
    a("--teacher_schedule", default="cosine", choices=["constant", "cosine"], help="after warmup")
    a("--teacher_seed", type=int, default=0, help="teacher init and data seed")
    a("--ckpt_every", type=int, help="teacher checkpoint interval (steps); step 0 always saved")
    a("--teacher_dir", type=str, default=None, help="reuse the teacher of an earlier run's --out")
    a("--batch", type=int, help="sequences per student step (fresh samples; cosine schedule)")
    a("--lr", type=float, default=None, help="one student learning rate (replaces --lr_grid)")
    a("--lr_grid", type=str, help="student learning rates; each method at its best one")
    a("--warmup", type=float, default=0.06, help="warmup, fraction of the steps (teacher too)")
    a("--clip", type=float, default=1.0, help="gradient-norm clipping (0 = off; teacher too)")
    a("--betas", type=str, default="0.9,0.95", help="Adam betas (teacher too)")
    a("--budgets", type=str, help="student step budgets (Fig. 1 right), <= --teacher_steps")
    a("--seeds", type=str, default="0,1,2", help="student seeds (the paper averages 3)")
    a("--methods", type=str, default="ce,oneshot,progressive,two_shot", help="--mode all trains")
    a("--temperature", type=float, help="teacher softmax temperature; 1e-20: argmax (paper)")
    a("--refresh", type=str, help="progressive: steps per checkpoint; auto = inflection C1")
    a("--speed", type=float, default=1.0, help="progressive: the teacher runs this much faster")
    a("--ckpt", type=str, default="auto", help="two_shot: stage-1 checkpoint; auto: inflection")
    a("--T", type=str, default="auto", help="two_shot: stage-1 steps; auto = half the budget")
    a("--two_shot_sweep", type=str, default="none", help="more stage-1 steps: steps/auto/drop/none")
    a("--probe_size", type=int, help="sequences for M_robust / M_close (paper: 1024)")
    a("--probe_positions", type=str, help="positions p of M_robust / M_close (BOS = 0)")
    a("--windows", type=str, default=WINDOWS, help="n-gram windows name:left:right around p")
    a("--probe_every", type=int, default=1, help="probe every k-th teacher checkpoint")
    a("--nt_train", type=int, help="sequences that train the non-terminal probe")
    a("--nt_eval", type=int, help="sequences that evaluate the non-terminal probe")
    a("--nt_steps", type=int, default=200, help="full-batch Adam steps of the non-terminal probe")
    a("--eval_size", type=int, help="held-out sequences (paper: 4096), fixed by seed")
    a("--eval_every", type=int, help="student evaluation interval (steps)")
    a("--out", type=str, default=None, help="run folder (default out/pcfg/<preset>-...-<mode>)")
    a("--resume", action="store_true", help="continue the run in --out from its last checkpoints")
    a("--save_every", type=int, default=None, help="student resume-state interval (4 evals)")
    a("--device", type=str, default="auto", help="auto, cpu, cuda, cuda:N or mps")
    a("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    a("--workers", type=int, default=1, help="processes for students and probes (1 thread each)")
    a("--max_steps", type=int, default=None, help=argparse.SUPPRESS)  # tests: stop runs here
    a("--halt_at", type=str, default=None, help=argparse.SUPPRESS)  # tests: die at teacher:N etc.
    return p


# --------------------------------------------------------------------------------------------------
# 1. Data (Sec. 4.1). Allen-Zhu & Li's grammars as in the paper's code, a line per depth, strictly
# layered (s -> ... -> preterminals a, b, c -> a token: 7 ancestors each), uniform rules.
GRAMMARS = {
    "cfg3b": """s -> r q | q p
        p -> m n o | n o m; q -> n m o | m n; r -> o m | m o n
        m -> l j | j l k; n -> k j l | l j k; o -> l k j | k j
        j -> h i | i h; k -> h g i | g h i; l -> i h g | h i g
        g -> d f e | f e d; h -> e d f | d e f; i -> e f d | f d e
        d -> c a | a b c; e -> c b | c a b; f -> c b a""",
    "cfg3f": """s -> q r | q p r | r p p | q q
        p -> o m o | n o | o o; q -> m m | m n | n m o; r -> o n | n m | m n o | m o
        m -> l l | j l j | k j | k k; n -> l k j | k l | l k; o -> k l j | l j j | j l
        j -> h i | i h i | g i h; k -> g i | i g i | i h | g i i; l -> g h h | h h g | g g | i i h
        g -> e f f | f d f | d f f; h -> e e | f d | f d d; i -> d f d | f e | e e f
        d -> b b a | c b b | c a b | c b; e -> c a a | a b | c c a; f -> a b a | c c | a a""",
    "cfg3g": """s -> p q | q q p | q p r
        p -> n n m | o n m | o m n; q -> m n | o o | m n n; r -> m m | m m o | o m
        m -> k j j | j k | j j; n -> k j k | k l j | l k; o -> l j | l l | k j l
        j -> g i | h h h | h h; k -> h i | g h g | g g; l -> g h | i g g | i h
        g -> e e e | d d d | d d; h -> e e f | f d | e f d; i -> d f | d e | f f f
        d -> b c a | a a | b b; e -> a c b | a c | c c a; f -> b c c | b c | b a""",
    "cfg3h": """s -> q q r | p r
        p -> m n | o n; q -> o m | n m; r -> n n o | n o n
        m -> k j | l j; n -> j k | l j l; o -> l j j | l k k | k l l
        j -> i h | h g; k -> g i i | g g | i i g; l -> g i | h h g
        g -> e d f | f d | e e; h -> e d d | d d | d f f; i -> d f | e d | f e
        d -> b c b | a b c | a c a; e -> a b | c c a | a c; f -> b a c | a c c""",
    "cfg3i": """s -> p p q | r q p
        p -> o m o | m m; q -> n m n | o o; r -> m m o | o n
        m -> j j | k k; n -> l l | l k; o -> k l j | k l
        j -> i h | g i h; k -> g g g | g g; l -> h h g | h g i
        g -> e d d | f f; h -> d d d | d d e; i -> d f f | e d
        d -> c a b | b c a; e -> a a | b b; f -> a a c | a b""",
}
SYMBOLS = "abcdefghijklmnopqrs"              # a, b, c are the preterminals; s is the root
LEVEL_OF = {**{c: 6 - i // 3 for i, c in enumerate(SYMBOLS[:18])}, "s": 0}
TOKENS = {"a": 0, "b": 1, "c": 2, "BOS": 3, "EOS": 4, "PAD": 5, "MASK": 6}  # the official map
BOS, PAD, MASK = TOKENS["BOS"], TOKENS["PAD"], TOKENS["MASK"]
VOCAB = 8                                   # as the paper's models (id 7 is never used)
TERMINAL_IDS = torch.tensor([0, 1, 2])      # random replacements of the 80/10/10 rule
_CACHE = {}                                 # --cache_data: path -> stored batches


def uniform_probs(k):
    """Uniform over k rules, rounded like the official parse_pcfg.py: 0.333/0.333/0.334."""
    p = round(1 / k, 3)
    return [p] * (k - 1) + [1 - p * (k - 1)]


@lru_cache(maxsize=None)
def grammar(name):
    """Arrays for the vectorised sampler: rules, children, cumulative probabilities, spans."""
    rules = {}
    for line in GRAMMARS[name].replace(";", "\n").strip().splitlines():
        lhs, rhs = (side.strip() for side in line.split("->"))
        rules[lhs] = [alt.split() for alt in rhs.split("|")]
        assert all(LEVEL_OF[c] == LEVEL_OF[lhs] + 1 for alt in rules[lhs] for c in alt), line
    width = max(len(alt) for alts in rules.values() for alt in alts)
    max_rules = max(map(len, rules.values()))
    first = np.zeros(len(SYMBOLS), np.int64)
    cum = np.full((len(SYMBOLS), max_rules), np.inf)
    children, n_children = [], []
    for i, sym in enumerate(SYMBOLS):
        alts = rules.get(sym, [[]])  # preterminals: no rule (they emit their token)
        first[i] = len(children)
        cum[i, :len(alts) - 1] = np.cumsum(uniform_probs(len(alts)))[:-1]  # the last: the rest
        children += [[SYMBOLS.index(c) for c in alt] + [-1] * (width - len(alt)) for alt in alts]
        n_children += [len(alt) for alt in alts]
    depth = max(LEVEL_OF.values())
    longest = {c: 1 for c in "abc"}  # the longest expansion of each symbol, bottom-up
    for sym in sorted(rules, key=LEVEL_OF.get, reverse=True):
        longest[sym] = max(sum(longest[c] for c in alt) for alt in rules[sym])
    longest_at = [max(v for k, v in longest.items() if LEVEL_OF[k] == d) for d in range(depth + 1)]
    return {"name": name, "rules": rules, "first": first, "cum": cum, "depth": depth,
            "children": np.array(children), "n_children": np.array(n_children),
            "start": SYMBOLS.index("s"), "token_of": np.array([TOKENS.get(c, -1) for c in SYMBOLS]),
            "max_len": longest["s"], "longest_at": longest_at, "n_classes": [1] + [3] * depth,
            "class_of": np.arange(len(SYMBOLS)) % 3}  # s: 18 % 3 = 0


# The sampler: top-down as the paper's recursive one, but a tree level of a batch at a time (numpy).
# Each token comes with its 7 ancestors and whether it closes each one's span.
def sample_sentences(g, n, rng):
    """n sentences -> tokens (N,), anc (N, 7) symbol indices, ends (N, 7) bool, offsets (n+1,)."""
    nodes = np.full(n, g["start"])
    syms, parents, last, width = [nodes], [], [], g["children"].shape[1]
    for _ in range(g["depth"]):
        rule = g["first"][nodes] + (rng.random(len(nodes))[:, None] >= g["cum"][nodes]).sum(1)
        k = g["n_children"][rule]
        keep = np.arange(width)[None] < k[:, None]  # row-major: children stay in order
        nodes = g["children"][rule][keep]
        parents.append(np.repeat(np.arange(len(k)), k))
        last.append((np.arange(width)[None] == (k - 1)[:, None])[keep])
        syms.append(nodes)
    D = g["depth"] + 1
    anc = np.empty((len(nodes), D), np.int64)
    is_last = np.ones((len(nodes), D + 1), bool)  # [:, d]: the depth-d node is a last child
    idx = np.arange(len(nodes))
    for d in range(D - 1, -1, -1):
        anc[:, d] = syms[d][idx]
        if d > 0:
            is_last[:, d] = last[d - 1][idx]
            idx = parents[d - 1][idx]
    # a token closes its depth-d ancestor's span iff every node below that ancestor is a last child
    ends = np.flip(np.cumprod(np.flip(is_last[:, 1:], 1), 1), 1).astype(bool)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(idx, minlength=n))])
    return {"tokens": g["token_of"][nodes], "anc": anc, "ends": ends, "offsets": offsets}


def sample_batch(g, n, rng, crop, subtree=0):
    """n x [BOS] + a sentence, a random `crop`-token window of one, or the span of a random
    depth-D node (subtree=D): ids (n, seq_len) (PAD after), anc and ends (n, seq_len, 7)."""
    s = sample_sentences(g, n, rng)
    first, length = s["offsets"][:-1], np.diff(s["offsets"])
    if subtree:  # pick one depth-D span per sentence, uniformly
        span_of = np.concatenate([[0], np.cumsum(s["ends"][:, subtree])[:-1]])  # span index
        lo, hi = span_of[first], span_of[s["offsets"][1:] - 1]
        pick = lo + (rng.random(len(lo)) * (hi - lo + 1)).astype(np.int64)
        first = np.searchsorted(span_of, pick)
        length = np.searchsorted(span_of, pick, side="right") - first
    length = length + 1  # with BOS
    seq_len = crop or int(length.max())
    start = np.zeros(n, np.int64)
    if crop:  # a random window
        start = (rng.random(n) * np.maximum(length - seq_len + 1, 1)).astype(np.int64)
    pos = start[:, None] + np.arange(seq_len)[None]  # position in [BOS] + sentence
    real = (pos >= 1) & (pos < length[:, None])
    src = np.where(real, first[:, None] + pos - 1, 0)
    ids = np.where(real, s["tokens"][src], np.where(pos == 0, BOS, PAD))
    anc = np.where(real[..., None], s["anc"][src], -1)
    ends = real[..., None] & s["ends"][src]
    return torch.from_numpy(ids), torch.from_numpy(anc), torch.from_numpy(ends)


def rng_for(seed, stream, index=0):
    """Streams: 1 teacher data, 2 student data, 3 held-out, 4 n-gram probe, 5/6 NT probe. A batch
    depends only on (seed, stream, step): the same for every budget and method, no resume state."""
    return np.random.default_rng([seed, stream, index])


def sample_for(args, n, rng):
    return sample_batch(grammar(args.grammar), n, rng, args.crop, args.subtree)


def fixed_set(args, stream, n):
    """Probe sets, fixed by seed 12345 and a stream of their own."""
    return sample_for(args, n, rng_for(12345, stream))


def train_batch(args, seed, stream, step):
    """Batch `step` of stream 1 (teacher) or 2 (students); --cache_data 1: stored once, read."""
    b = args.teacher_batch if stream == 1 else args.batch
    if not args.cache_data:
        return sample_for(args, b, rng_for(seed, stream, step))
    name = f"{args.grammar}-crop{args.crop}-sub{args.subtree}-b{b}-seed{seed}-s{stream}.pt"
    path = os.path.join(args.out, "data", name)
    if path not in _CACHE:
        if not os.path.exists(path):
            n = args.teacher_steps if stream == 1 else max(args.budget_list)
            batches = [sample_for(args, b, rng_for(seed, stream, i)) for i in range(n)]
            common.save_checkpoint(batches, path)
        _CACHE[path] = common.load_checkpoint(path)
    return _CACHE[path][step]


def heldout_set(args):
    """Held-out sequences in none of the run's training streams (161 of 1024 subtrees would be)."""
    path = os.path.join(args.out, "heldout.pt")
    if os.path.exists(path):
        return common.load_checkpoint(path)

    def seq_key(row):
        return row[row != PAD].numpy().astype(np.int8).tobytes()
    seen = set()
    if args.crop or args.subtree:
        cfg = vars(args)
        if args.teacher_dir:
            cfg = common.read_json(os.path.join(args.teacher_dir, "config.json"))
        streams = [(s, 2, max(args.budget_list)) for s in args.seed_list]
        if args.mode != "ce" or args.teacher_dir:  # and the teacher's
            streams.append((cfg["teacher_seed"], 1, cfg["teacher_steps"]))
        for seed, stream, steps in streams:
            b = cfg["teacher_batch"] if stream == 1 else args.batch
            for step in range(steps):
                seen.update(seq_key(r) for r in sample_for(args, b, rng_for(seed, stream, step))[0])
    parts, kept = [], 0
    while kept < args.eval_size:  # chunks of --eval_size from stream 3 until enough are left
        ids, anc, ends = sample_for(args, args.eval_size, rng_for(12345, 3, len(parts)))
        ok = torch.tensor([seq_key(r) not in seen for r in ids], dtype=torch.bool)
        parts.append((ids[ok], anc[ok], ends[ok]))
        kept += int(ok.sum())
    rows = [row for part in parts for row in zip(*part)][:args.eval_size]  # lengths may differ
    pad = torch.nn.utils.rnn.pad_sequence
    columns = zip(zip(*rows), (PAD, -1, False))
    ids, anc, ends = (pad(list(x), batch_first=True, padding_value=v) for x, v in columns)
    out = {"ids": ids, "anc": anc, "ends": ends,
           "overlapping_in_first_draw": args.eval_size - len(parts[0][0])}
    common.save_checkpoint(out, path)
    return out


# Targets. MLM (Sec. 4): each position is selected with probability 0.3 and becomes [MASK] 80%,
# stays 10%, a random terminal 10%; the loss is on selected positions, which the official code (and
# by default this one) also hides as keys. Boundary: next-token targets at span ends only.
def mask_tokens(ids, gen, rate, mask_id, random_ids, can_select, hide_selected=True,
                attendable=None):
    """BERT masking of ids (B, seq_len) -> inputs, labels (-100: not selected) and key_mask: True
    where a key may be attended (`attendable`, default can_select), less the selected if hidden."""
    u = torch.rand(ids.shape, generator=gen, device=ids.device)
    pick = torch.randint(len(random_ids), ids.shape, generator=gen, device=ids.device)
    selected = (u < rate) & can_select
    masked = selected & (u < 0.8 * rate)
    replaced = selected & (u >= 0.8 * rate) & (u < 0.9 * rate)
    inputs = torch.where(masked, torch.full_like(ids, mask_id), ids)
    inputs = torch.where(replaced, random_ids.to(ids.device)[pick], inputs)
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    key_mask = can_select if attendable is None else attendable
    return inputs, labels, (key_mask & ~selected) if hide_selected else key_mask.clone()


def boundary_targets(ids, ends, level):
    """As the official code: targets[:, i] = ids[:, i+1] where i+1 closes a depth-`level` span."""
    targets = torch.full_like(ids, -100)
    targets[:, :-1] = torch.where(ends[:, 1:, level], ids[:, 1:], targets[:, :-1])
    return targets


def make_inputs(args, ids, ends, level, seed_material):
    """(inputs, key_mask or None, targets) on the device; masks: a batch-seeded CPU generator."""
    if args.objective == "boundary":
        return ids.to(args.device), None, boundary_targets(ids, ends, level).to(args.device)
    gen = torch.Generator().manual_seed(int(seed_material))
    inputs, labels, key_mask = mask_tokens(ids, gen, args.mask_rate, MASK, TERMINAL_IDS,
                                           ids != PAD, hide_selected=bool(args.hide_masked_keys))
    return inputs.to(args.device), key_mask.to(args.device), labels.to(args.device)


def batch_for(args, seed, stream, step, level):
    ids, _, ends = train_batch(args, seed, stream, step)
    return make_inputs(args, ids, ends, level, 7919 * step + 104729 * seed + stream)


def eval_set(args, level):
    """The held-out set as device batches of (inputs, key_mask, targets); masks fixed by seed."""
    h = heldout_set(args)
    x, km, y = make_inputs(args, h["ids"], h["ends"], level, 12345)
    parts = [slice(i, i + EVAL_BATCH) for i in range(0, len(x), EVAL_BATCH)]
    return [(x[p], None if km is None else km[p], y[p]) for p in parts]


# --------------------------------------------------------------------------------------------------
# 2. Model: BERT in plain PyTorch (Sec. 4), post-LN, GELU, LayerNorm eps 1e-12, init N(0, 0.02), MLM
# head tied to the embeddings; no padding_idx (the official 0 is terminal 'a'). causal: GPT-style.
class Block(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)  # attention
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)  # MLP
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=1e-12), nn.LayerNorm(d, eps=1e-12)

    def forward(self, h, bias, causal):
        B, seq_len, d = h.shape
        qkv = self.qkv(h).view(B, seq_len, 3, self.heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, seq_len, head_dim)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p,
                                           is_causal=causal and bias is None)
        a = a.transpose(1, 2).reshape(B, seq_len, d)
        h = self.ln1(h + F.dropout(self.proj(a), p, self.training))
        return self.ln2(h + F.dropout(self.out(F.gelu(self.fc(h))), p, self.training))


class Encoder(nn.Module):
    """BERT with an MLM head: ids (B, seq_len), key_mask (B, seq_len) (True: may be attended to)
    or None -> logits (B, seq_len, vocab), and the last hidden states (B, seq_len, d) if asked."""

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

    def forward(self, ids, key_mask=None, return_hidden=False, select=None):
        """select (B, seq_len) bool: the head only there, logits (n, vocab). Hidden keys get a large
        finite negative bias, as HF BERT, not -inf: a query with no key averages, not NaN."""
        seq_len = ids.shape[1]
        h = self.ln_emb(self.tok(ids) + self.pos.weight[:seq_len])  # (B, seq_len, d)
        h = F.dropout(h, self.dropout, self.training)
        bias = None  # nothing hidden: the fast path
        if key_mask is not None:
            neg = torch.finfo(h.dtype).min / 2  # two of them (key + causal) still do not overflow
            bias = torch.zeros(key_mask.shape, dtype=h.dtype, device=h.device)
            bias = bias.masked_fill_(~key_mask, neg)[:, None, None, :]  # (B, 1, 1, seq_len)
            if self.causal:
                future = torch.ones(seq_len, seq_len, dtype=torch.bool, device=h.device).triu_(1)
                causal_bias = torch.zeros(seq_len, seq_len, dtype=h.dtype, device=h.device)
                bias = bias + causal_bias.masked_fill_(future, neg)
        for block in self.blocks:
            h = block(h, bias, self.causal)
        out = h if select is None else h[select]
        logits = self.head_ln(F.gelu(self.head(out))) @ self.tok.weight.T + self.head_bias
        return (logits, h) if return_hidden else logits


def make_model(args, role, seed):
    """Same seed, same init (every method and lr); the global RNG (dropout) is left untouched."""
    heads = args.teacher_heads if role == "teacher" else args.student_heads
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1000 * seed + (0 if role == "teacher" else 5))
        model = Encoder(VOCAB, args.max_len, args.layers, heads, args.head_dim, args.dropout,
                        causal=args.objective == "boundary")
    return model.to(args.device)


def make_optimizer(model, lr, args):
    return torch.optim.AdamW(model.parameters(), lr, betas=args.beta_pair, weight_decay=0, eps=1e-8)


def train_step(model, opt, lr, x, key_mask, targets, soft=None, clip=1.0):
    """One AdamW step of any model on the positions with a target: CE on the labels (teacher, CE),
    or the distillation loss -sum_v q_v log p_v against the teacher's `soft` there (Sec. 2)."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    sel = targets != -100
    logits = model(x, key_mask, select=sel)  # (n selected, vocab)
    loss = (F.cross_entropy(logits.float(), targets[sel]) if soft is None  # labels
            else common.soft_cross_entropy(logits, soft).mean())  # the teacher's soft targets
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


# --------------------------------------------------------------------------------------------------
# 3. Teacher (Sec. 4): the wide model on labels, saved every --ckpt_every steps and at step 0 (the
# official code saves no step 0: no progressive lookup at the start). loss_phases: Fig. 4 left.
def teacher_folder(run_dir, level):
    return os.path.join(run_dir, "ckpt", "teacher" if level is None else f"teacher_level{level}")


def train_teacher(args, level, heldout):
    """The teacher's run: AdamW with warmup and --teacher_schedule; resumable (section 6)."""
    folder = teacher_folder(args.out, level)
    name = "teacher" if level is None else f"teacher_level{level}"
    who = {"role": "teacher", "level": level}
    model = make_model(args, "teacher", args.teacher_seed)
    opt = make_optimizer(model, args.teacher_lr, args)
    total, end = args.teacher_steps, min(args.teacher_steps, args.max_steps or args.teacher_steps)
    start = resume(args, os.path.join(folder, "state.pt"), [model], [opt], who)["step"]
    if start == 0:
        save_teacher(args, folder, model, opt, heldout, who, 0)
    t0, loss_sum, n = time.time(), torch.zeros((), device=args.device), 0  # n: steps in loss_sum
    for step in range(start, end):
        lr = args.teacher_lr * common.lr_factor(step, total, args.teacher_schedule, args.warmup)
        x, key_mask, targets = batch_for(args, args.teacher_seed, 1, step, level)
        loss_sum += train_step(model, opt, lr, x, key_mask, targets, clip=args.clip)
        n += 1
        done = step + 1
        halt_if_asked(args, "teacher", done)
        if done % args.ckpt_every == 0 or done == end:
            train_loss = loss_sum.item() / n
            common.check_finite(train_loss, f"{name} training loss at step {done}")
            val_loss, val_acc = save_teacher(args, folder, model, opt, heldout, who, done,
                                             train_loss)
            loss_sum, n = torch.zeros((), device=args.device), 0
            if done % (10 * args.ckpt_every) == 0 or done == total:
                print(f"{name} step {done:>6d}  val loss {val_loss:.4f}  acc {val_acc:.3f}  "
                      f"({time.time() - t0:.0f}s)", flush=True)


def save_teacher(args, folder, model, opt, heldout, who, step, train_loss=None):
    """Checkpoint `step`: evaluated, logged, saved (with the state that --resume reads)."""
    val_loss, val_acc = evaluate(model, heldout)
    common.check_finite(val_loss, f"teacher validation loss at step {step}")
    record = {**who, "step": step, "val_loss": val_loss, "val_acc": val_acc,
              "train_loss": train_loss}
    common.append_jsonl(os.path.join(args.out, "metrics.jsonl"), record)
    ckpt = {"model": model.state_dict(), "step": step, "val_loss": val_loss, "val_acc": val_acc}
    common.save_checkpoint(ckpt, os.path.join(folder, f"step_{step:09d}.pt"))
    save_state(os.path.join(folder, "state.pt"), [model], [opt], step)
    return val_loss, val_acc


@lru_cache(maxsize=256)
def load_teacher(folder, step, device):
    """Checkpoint `step` of `folder`: {"model", "step", "val_loss", "val_acc"} (model: yours)."""
    return common.load_checkpoint(os.path.join(folder, f"step_{step:09d}.pt"), device)


def teacher_at(args, level, step):
    model = make_model(args, "teacher", 0).eval()
    folder = teacher_folder(args.teacher_dir or args.out, level)
    model.load_state_dict(load_teacher(folder, step, args.device)["model"])
    return model


def teacher_curve(args, level):
    folder = teacher_folder(args.teacher_dir or args.out, level)
    files = [load_teacher(folder, s, "cpu") for s in common.saved_steps(folder)]
    return {"steps": [f["step"] for f in files], "val_loss": [f["val_loss"] for f in files],
            "val_acc": [f["val_acc"] for f in files]}


def loss_phases(steps, losses, frac=0.25):
    """Plateau, drop, decay (Sec. 4.2, Fig. 4 left): a piecewise-linear fit on log(1 + step) finds
    the plateau and drop starts; the drop ends once descent < frac x its peak (which ends at C1)."""
    s, y, n, err = np.asarray(steps, float), np.asarray(losses, float), len(steps), {}
    if n < 6:
        return None
    x = np.log1p(s)
    for i, j, k in combinations(range(1, n - 1), 3):  # breakpoints i < j < k
        X = np.stack([np.ones(n), x] + [np.maximum(x - x[m], 0) for m in (i, j, k)], 1)
        err[i, j, k] = float(((X @ np.linalg.lstsq(X, y, rcond=None)[0] - y) ** 2).sum())
    i, j, k = min(err, key=err.get)  # the first of equal fits
    rate = -np.diff(y) / np.diff(s)  # loss decrease per step on each interval
    rate = np.convolve(np.pad(rate, 1, mode="edge"), np.ones(3) / 3, "valid")
    c = e = j + int(np.argmax(rate[j:k]))
    while e < len(rate) - 1 and rate[e + 1] >= frac * rate[c]:
        e += 1

    def slope(a, b):  # mean loss change per step from checkpoint a to b
        return float((y[b] - y[a]) / max(s[b] - s[a], 1))
    return {"plateau_start": int(s[i]), "drop_start": int(s[j]), "drop_end": int(s[e + 1]),
            "inflection": int(s[c + 1]), "plateau_loss": float(y[i:j + 1].mean()),
            # the plateau's slope over its second half (its start still carries the fall)
            "slopes": {"plateau": slope((i + j) // 2, j), "drop": slope(j, e + 1),
                       "decay": slope(e + 1, n - 1)}}


def inflection_of(res):
    """The teacher's inflection C1 (Fig. 4) and how it was found (--refresh and --ckpt auto)."""
    if res.get("phases"):
        return res["phases"]["inflection"], "inflection of the teacher's loss"
    steps = res["teacher"]["steps"]
    return steps[len(steps) // 2], "middle checkpoint (too few checkpoints to find phases)"


# --------------------------------------------------------------------------------------------------
# 4. Distillation schedule (Sec. 2): the checkpoint a student learns from at each step, within the
# horizon min(speed x B, teacher steps) at budget B (Fig. 1 right). Progressive: a new checkpoint
# every --refresh steps (auto: resolved here); one-shot: the last; (2,T): one for T steps (Alg. 1).
def horizon_steps(saved, args, budget):
    return [s for s in saved if s <= min(args.speed * budget, saved[-1])]


def teacher_horizon(args, level, budget):
    saved = common.saved_steps(teacher_folder(args.teacher_dir or args.out, level))
    return horizon_steps(saved, args, budget)


def with_refresh(args, res):
    """--refresh auto = the teacher's C1 (our rule: the paper's 1000 is its C1, Fig. 4), in res."""
    if args.refresh != "auto":
        return args
    res["refresh"], res["refresh_rule"] = inflection_of(res)
    return argparse.Namespace(**{**vars(args), "refresh": res["refresh"]})


def stage1_of(args, res):
    """(2,T)'s stage-1 checkpoint: --ckpt, or (auto) the teacher's inflection C1; in `res`."""
    chosen, how = (int(args.ckpt), "--ckpt") if args.ckpt != "auto" else inflection_of(res)
    res["two_shot_ckpt"], res["two_shot_rule"] = chosen, how
    print(f"two_shot: stage-1 checkpoint {chosen} ({how}), then the final one")
    return chosen


def schedule_for(method, step, saved, args, budget, stage1=None):
    """`method`'s checkpoint at student step `step` (saved: those in the horizon); CE: None."""
    if method == "ce":
        return None
    if method == "oneshot":  # the horizon's last checkpoint (the progressive rule at speed inf)
        return saved[-1]
    if method == "progressive":
        return common.progressive_ckpt(step, saved, args.speed, args.refresh)
    if method == "two_shot":  # T: --T, or (auto) half of the budget
        T = round(budget / 2) if args.T == "auto" else args.T
        return stage1 if step < T else saved[-1]
    raise ValueError(method)


# --------------------------------------------------------------------------------------------------
# 5. One student's step (Sec. 2): the checkpoint that the schedule names sees the student's own
# inputs; its softened outputs at the positions that carry a target are the student's targets:
#     soft = soft_targets(teacher_at(args, level, schedule_for(...)), x, key_mask, targets, temp)
#     train_step(student, opt, lr, x, key_mask, targets, soft)   # CE: soft None, the labels
@torch.no_grad()
def soft_targets(teacher, x, key_mask, targets, temperature):
    """The teacher's distribution at temperature `temperature` at each position with a target."""
    return common.distill_targets(teacher(x, key_mask)[targets != -100], temperature)


# --------------------------------------------------------------------------------------------------
# 6. Engine: a group of students (one budget and seed, every method and lr) trains on the same
# batches, so a checkpoint's forward pass serves them all; groups run in processes; --resume.
def save_state(path, models, opts, step, **extra):
    """What --resume needs: weights, optimizers, step and the global RNG (dropout)."""
    common.save_checkpoint({"models": [m.state_dict() for m in models],
                            "opts": [o.state_dict() for o in opts], "step": step,
                            "torch_rng": torch.get_rng_state(), **extra}, path)


def resume(args, path, models, opts, who, **fresh):
    """--resume: the state at `path` (if none: `fresh`, step 0); who's later records dropped."""
    state = dict(fresh, step=0)
    if os.path.exists(path):
        state = common.load_checkpoint(path, args.device)
        for model, opt, model_state, opt_state in zip(models, opts, state["models"], state["opts"]):
            model.load_state_dict(model_state)
            opt.load_state_dict(opt_state)
        torch.set_rng_state(state["torch_rng"])
        print(f"{path}: resuming at step {state['step']}")
    metrics = os.path.join(args.out, "metrics.jsonl")
    records = common.read_jsonl(metrics)
    mine = [all(r.get(k) == v for k, v in who.items()) for r in records]
    kept = [r for r, m in zip(records, mine) if not m or r["step"] <= state["step"]]
    common.rewrite_jsonl(metrics, kept)
    return state


def halt_if_asked(args, who, step):
    """Testing aid: die abruptly, as a killed job would, to check that --resume ends the same."""
    if args.halt_at == f"{who}:{step}":
        print(f"halting at {who} step {step} (--halt_at)", flush=True)
        os._exit(1)


def spec(method, lr, stage1=None, tag=None):  # tag: a (2,T) sweep student, two_shot@<stage 1>
    return {"method": method, "lr": lr, "stage1": stage1, "name": f"{tag or method}/lr={lr:g}"}


def group_name(budget, seed, level, tag=""):
    return f"b{budget}-s{seed}" + ("" if level is None else f"-L{level}") + tag


def student_path(args, group, method, lr):
    return os.path.join(args.out, "ckpt", "students", f"{group}-{method}-lr{lr:g}.pt")


def train_group(args, job):
    """A group (level, budget, seed, specs, tag), step by step: {name: {"acc", "curve", ...}}."""
    level, budget, seed, specs, tag = job
    name = group_name(budget, seed, level, tag)
    path = os.path.join(args.out, "ckpt", "students", name)
    state_path, done_path = path + ".pt", path + ".json"
    if os.path.exists(done_path):
        return common.read_json(done_path)
    distilled = any(sp["method"] != "ce" for sp in specs)
    saved = teacher_horizon(args, level, budget) if distilled else []
    heldout = eval_set(args, level)
    models = [make_model(args, "student", seed) for _ in specs]
    opts = [make_optimizer(m, sp["lr"], args) for m, sp in zip(models, specs)]
    who = {"role": "student", "group": name}
    state = resume(args, state_path, models, opts, who, history={"steps": [], "acc": []})
    history, start = state["history"], state["step"]
    if start == 0:
        log_group(args, who, specs, models, heldout, history, 0)
    t0, end, teachers = time.time(), min(budget, args.max_steps or budget), {}
    for step in range(start, end):
        x, key_mask, targets = batch_for(args, seed, 2, step, level)
        factor = common.lr_factor(step, budget, "cosine", args.warmup)
        cks = [schedule_for(sp["method"], step, saved, args, budget, sp["stage1"]) for sp in specs]
        teachers = scheduled_teachers(args, level, cks, teachers)
        soft = {ck: soft_targets(teacher, x, key_mask, targets, args.temperature)
                for ck, teacher in teachers.items()}
        losses = [train_step(m, o, sp["lr"] * factor, x, key_mask, targets, soft.get(ck), args.clip)
                  for m, o, sp, ck in zip(models, opts, specs, cks)]
        done = step + 1
        halt_if_asked(args, "students", done)
        if done % args.eval_every == 0 or done == end:
            for sp, loss in zip(specs, losses):
                common.check_finite(loss.item(), f"{sp['name']}'s loss at step {done} ({name})")
            log_group(args, who, specs, models, heldout, history, done)
            if done % args.save_every == 0 and done != end:
                save_state(state_path, models, opts, done, history=history)
    finish_group(args, name, specs, models, history, done_path)
    if os.path.exists(state_path):
        os.remove(state_path)
    print(f"students {name} done ({time.time() - t0:.0f}s)", flush=True)
    return common.read_json(done_path)


def scheduled_teachers(args, level, cks, kept):
    """This step's checkpoints (None: CE) as models, each loaded once and kept while used."""
    return {ck: kept.get(ck) or teacher_at(args, level, ck) for ck in set(cks) - {None}}


def log_group(args, who, specs, models, heldout, history, step):
    """Held-out accuracy of every student, into `history` and metrics.jsonl."""
    accs = [evaluate(m, heldout)[1] for m in models]
    history["steps"].append(step)
    history["acc"].append(accs)
    record = {**who, "step": step, "acc": {sp["name"]: a for sp, a in zip(specs, accs)}}
    common.append_jsonl(os.path.join(args.out, "metrics.jsonl"), record)


def finish_group(args, name, specs, models, history, done_path):
    """Final weights (for the students' NT probe) and accuracies."""
    for m, sp in zip(models, specs):
        path = student_path(args, name, sp["name"].split("/")[0], sp["lr"])  # or two_shot@<step>
        common.save_checkpoint({"model": m.state_dict()}, path)
    result = {sp["name"]: dict(sp, acc=curve[-1], curve=list(curve))
              for sp, curve in zip(specs, zip(*history["acc"]))}
    result["_steps"] = history["steps"]
    common.write_json(result, done_path)


def parallel_map(args, fn, items):
    """fn(args, item) for each item, here or in --workers processes of 1 thread (same results)."""
    if args.workers == 1 or len(items) < 2 or not args.device.startswith("cpu"):
        return [fn(args, item) for item in items]
    import multiprocessing as mp
    workers = min(args.workers, len(items))
    with mp.get_context("spawn").Pool(workers, torch.set_num_threads, (1,)) as pool:
        return pool.starmap(fn, [(args, item) for item in items], chunksize=1)


def group_specs(args, level, budget, methods, stage1, joined):
    """Every method at every lr; `joined`: (2,T) sweep students, in the smallest budget's."""
    if "two_shot" in methods:  # the stage-1 checkpoint within this budget's horizon
        stage1 = max(s for s in teacher_horizon(args, level, budget) if s <= stage1)
    specs = [spec(m, lr, stage1 if m == "two_shot" else None) for m in methods for lr in args.lrs]
    if budget == args.budget_list[0]:
        specs += [spec("two_shot", args.lrs[0], ck, f"two_shot@{ck}") for ck in joined]
    return specs


def run_students(args, level, methods, stage1, sweep=()):
    """Every budget x seed; `sweep`: (2,T) stage-1 checkpoints at the smallest budget."""
    joined = list(sweep) if len(args.lrs) == 1 else []
    jobs = []
    for budget in args.budget_list:
        specs = group_specs(args, level, budget, methods, stage1, joined)
        jobs += [(level, budget, seed, specs, "") for seed in args.seed_list]
    results = parallel_map(args, train_group, jobs)
    done = {(job[1], job[2]): r for job, r in zip(jobs, results)}
    students, by_lr, curves = best_students(args, level, methods, done)
    if not sweep:
        return students, by_lr, curves, []
    b0 = args.budget_list[0]
    lr = next(e["lr"] for e in students["two_shot"] if e["budget"] == b0)
    if joined:
        rows = [(ck, s, done[(b0, s)][f"two_shot@{ck}/lr={lr:g}"]["acc"])
                for ck in joined for s in args.seed_list]
    else:  # with a grid, two_shot's best lr is known only now: a group per stage-1 checkpoint
        jobs = [(level, b0, s, [spec("two_shot", lr, ck)], f"-sweep{ck}")
                for ck in sweep for s in args.seed_list]
        results = parallel_map(args, train_group, jobs)
        rows = [(job[3][0]["stage1"], job[2], r[f"two_shot/lr={lr:g}"]["acc"])
                for job, r in zip(jobs, results)]
    sweep_rows = [{"stage1": ck, "seed": s, "acc": acc, "lr": lr} for ck, s, acc in rows]
    return students, by_lr, curves, sweep_rows


def best_students(args, level, methods, done):
    """Each method at its best lr (the highest mean final accuracy over seeds), as the paper."""
    students, by_lr, curves = {m: [] for m in methods}, {}, {}
    for budget in args.budget_list:
        for m in methods:
            means = {lr: sum(done[(budget, s)][f"{m}/lr={lr:g}"]["acc"] for s in args.seed_list)
                     / len(args.seed_list) for lr in args.lrs}
            best = max(args.lrs, key=lambda lr: means[lr])
            by_lr.setdefault(m, {})[str(budget)] = {f"{lr:g}": means[lr] for lr in args.lrs}
            steps = done[(budget, args.seed_list[0])]["_steps"]
            curve = curves.setdefault(m, {}).setdefault(str(budget), {"steps": steps, "acc": []})
            for s in args.seed_list:
                r = done[(budget, s)][f"{m}/lr={best:g}"]
                entry = dict(budget=budget, seed=s, acc=r["acc"], lr=best, level=level,
                             stage1=r["stage1"])  # None (mlm's level, ...): left out
                students[m].append({k: v for k, v in entry.items() if v is not None})
                curve["acc"].append(r["curve"])
    return students, by_lr, curves


# --------------------------------------------------------------------------------------------------
# 7. Study: probes (Sec. 4.2). M_robust / M_close: how far the prediction at a masked p moves when
# its n-gram window is masked too (robust) or alone kept (close). NT: ancestors read out linearly.
@torch.no_grad()
def ngram_probe(model, ids, key_mask, positions, windows, mask_id, hide_masked=True, chunk=512):
    """ids (N, seq_len), key_mask (True: real token; None: all), windows {name: (left, right)}.
    Base: p masked; M_robust: [p-left, p+right] too; M_close: all but it. Per window and kind: L1 =
    ||P(.|perturbed)[p] - P(.|base)[p]||_1 (official) and TV = L1 / 2, quartiles and mean."""
    model.eval()
    seq_len, pos = ids.shape[1], torch.arange(ids.shape[1], device=ids.device)
    key_mask = torch.ones_like(ids, dtype=torch.bool) if key_mask is None else key_mask
    d = {name: {"robust": [], "close": []} for name in windows}

    def hide(v_ids, v_km, where):
        v_ids, v_km = v_ids.clone(), v_km.clone()
        v_ids[:, where] = mask_id
        v_km[:, where] &= not hide_masked
        return v_ids, v_km
    for p in positions:
        keep = key_mask[:, p]
        if not keep.any():
            continue
        variants = [hide(ids[keep], key_mask[keep], slice(p, p + 1))]
        for left, right in windows.values():
            lo, hi = max(0, p - left), min(seq_len, p + right + 1)
            variants.append(hide(*variants[0], slice(lo, hi)))
            variants.append(hide(*variants[0], (pos < lo) | (pos >= hi)))
        allx, allk = (torch.cat(v) for v in zip(*variants))
        probs = [torch.softmax(model(allx[i:i + chunk], allk[i:i + chunk])[:, p].float(), -1)
                 for i in range(0, len(allx), chunk)]
        probs = torch.cat(probs).view(len(variants), int(keep.sum()), -1)
        for w, name in enumerate(windows):
            d[name]["robust"].append((probs[1 + 2 * w] - probs[0]).abs().sum(-1))
            d[name]["close"].append((probs[2 + 2 * w] - probs[0]).abs().sum(-1))
    out = {}
    for name in windows:
        out[name] = {"count": int(sum(len(v) for v in d[name]["robust"]))}
        for kind in ("robust", "close"):
            q = dict.fromkeys(("median", "q25", "q75", "mean"), float("nan"))
            if d[name][kind]:  # over (sentence, position)
                l1 = torch.cat(d[name][kind]).double().cpu()
                levels = torch.tensor([0.25, 0.5, 0.75], dtype=l1.dtype)
                q25, median, q75 = torch.quantile(l1, levels).tolist()
                q = {"median": median, "q25": q25, "q75": q75, "mean": l1.mean().item()}
            out[name][kind] = {"l1": q, "tv": {k: v / 2 for k, v in q.items()}}
    return out


def nt_probe(train_feats, train_labels, eval_feats, eval_labels, n_classes, steps=200, lr=1e-2,
             seed=0):
    """Linear probe per depth: feats (N, d), labels (N, D) ancestor classes; full-batch Adam."""
    g = torch.Generator().manual_seed(seed)
    mu, sd = train_feats.mean(0), train_feats.std(0).clamp(min=1e-6)
    xtr, xev = (train_feats - mu) / sd, (eval_feats - mu) / sd
    total = sum(n_classes)
    W = (torch.randn(xtr.shape[1], total, generator=g, dtype=xtr.dtype) * 0.01).to(xtr.device)
    W.requires_grad_()
    b = torch.zeros(total, device=xtr.device, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=lr)
    bounds = np.cumsum([0] + list(n_classes))
    for _ in range(steps):
        opt.zero_grad()
        z = xtr @ W + b
        loss = sum(F.cross_entropy(z[:, bounds[k]:bounds[k + 1]], train_labels[:, k])
                   for k in range(len(n_classes)))
        loss.backward()
        opt.step()
    with torch.no_grad():
        z = xev @ W + b
    accs = []
    for k in range(len(n_classes)):
        pred = z[:, bounds[k]:bounds[k + 1]].argmax(-1)
        accs.append((pred == eval_labels[:, k]).float().mean().item())
    return accs


def nt_sets(args):
    """The NT probe's fixed train and eval sets: ids, key mask, real tokens, ancestor classes."""
    g, sets = grammar(args.grammar), []
    for stream, n in ((5, args.nt_train), (6, args.nt_eval)):
        ids, anc, _ = fixed_set(args, stream, n)
        real = anc[..., 0] >= 0
        labels = torch.from_numpy(g["class_of"][anc[real].numpy()])
        sets.append([t.to(args.device) for t in (ids, ids != PAD, real, labels)])
    return sets


def nt_accuracy(args, sets, model):
    """The NT probe on the last-layer hidden states (eval mode, unmasked input) at real tokens."""
    feats = []
    for ids, key_mask, real, _ in sets:
        with torch.no_grad():
            hs = [model.eval()(ids[i:i + EVAL_BATCH], key_mask[i:i + EVAL_BATCH],
                               return_hidden=True)[1] for i in range(0, len(ids), EVAL_BATCH)]
        feats.append(torch.cat(hs)[real])
    return nt_probe(feats[0], sets[0][3], feats[1], sets[1][3],
                    grammar(args.grammar)["n_classes"], steps=args.nt_steps)


def probe_job(args, job):
    """Teacher checkpoints `steps` of a level: {step: {"ngram": ..., "nt": [acc per depth]}}."""
    level, steps = job
    ids = fixed_set(args, 4, args.probe_size)[0].to(args.device)
    sets, out = nt_sets(args), {}
    for step in steps:
        model = teacher_at(args, level, step)
        out[step] = {"nt": nt_accuracy(args, sets, model)}
        if args.objective == "mlm":
            out[step]["ngram"] = ngram_probe(model, ids, ids != PAD, args.position_list,
                                             args.window_dict, MASK, bool(args.hide_masked_keys),
                                             EVAL_BATCH)
    return out


def run_probes(args, level):
    """M_robust / M_close (mlm) and NT probe: every --probe_every-th checkpoint and the last."""
    saved = common.saved_steps(teacher_folder(args.teacher_dir or args.out, level))
    steps, parts = sorted(set(saved[::args.probe_every]) | {saved[-1]}), {}
    jobs = [(level, steps[i::args.workers]) for i in range(min(args.workers, len(steps)))]
    for part in parallel_map(args, probe_job, jobs):
        parts.update({int(k): v for k, v in part.items()})
    la, lb = (s[3] for s in nt_sets(args))  # the floor: the train set's majority class
    majority = [(lb[:, k] == torch.bincount(la[:, k]).argmax()).float().mean().item()
                for k in range(la.shape[1])]
    nt = {"acc": [parts[s]["nt"] for s in steps], "majority": majority}
    res = {"steps": steps, "m_robust": {}, "m_close": {}, "nt": nt}
    for name in (args.window_dict if args.objective == "mlm" else {}):
        for kind in ("robust", "close"):
            res["m_" + kind][name] = {m: {q: [parts[s]["ngram"][name][kind][m][q] for s in steps]
                                          for q in ("median", "q25", "q75", "mean")}
                                      for m in ("l1", "tv")}
    return res


def probe_students(args, level, students):
    """NT probe of the final students (smallest budget, each method at its best lr)."""
    budget, out, sets = args.budget_list[0], {}, nt_sets(args)
    model = make_model(args, "student", 0)
    for m, entries in students.items():
        accs = []
        for e in (e for e in entries if e["budget"] == budget):
            path = student_path(args, group_name(budget, e["seed"], level), m, e["lr"])
            model.load_state_dict(common.load_checkpoint(path, args.device)["model"])
            accs.append(nt_accuracy(args, sets, model))
        out[m] = [sum(a[k] for a in accs) / len(accs) for k in range(len(accs[0]))]
    return out


def sweep_candidates(args, level, phases, chosen):
    """--two_shot_sweep (Fig. 4 right): more (2,T) stage-1 checkpoints at the smallest budget:
    given steps, or around the chosen one (auto) and the drop's ends; not the last (one-shot)."""
    saved = teacher_horizon(args, level, args.budget_list[0])
    chosen = max(s for s in saved if s <= chosen)  # within this budget's horizon, as group_specs
    if args.two_shot_sweep == "none":
        return []
    if args.two_shot_sweep not in ("auto", "drop"):
        wanted = common.parse_list(args.two_shot_sweep, int, "--two_shot_sweep")
        if any(w not in saved for w in wanted):
            fail("--two_shot_sweep", f"{wanted}: not all are checkpoints of the smallest budget")
        return [w for w in wanted if w != chosen]
    marks = [chosen / 2, chosen * 1.5, chosen * 3] if args.two_shot_sweep == "auto" else []
    marks += [phases["drop_start"], phases["drop_end"]] if phases else []
    near = {min(saved, key=lambda s: abs(s - t)) for t in marks}
    return sorted(s for s in near if s not in (chosen, saved[-1], 0))


# --------------------------------------------------------------------------------------------------
# 8. Study: results: table, claim checks and figures.
def teacher_acc_at(args, teacher, budget):
    """The teacher 'at budget B' is its checkpoint at the horizon min(speed x B, last step)."""
    step = horizon_steps(teacher["steps"], args, budget)[-1]
    return teacher["val_acc"][teacher["steps"].index(step)]


def accs_at(entries, budget):
    return [e["acc"] for e in entries if e["budget"] == budget]


def mean_at(entries, budget):
    return sum(accs_at(entries, budget)) / len(accs_at(entries, budget))


def print_table(levels, args):
    bs = args.budget_list
    for lk, res in levels.items():
        t = res.get("teacher")
        rows = [["teacher"] + [f"{teacher_acc_at(args, t, b):.3f}" for b in bs]] if t else []
        for m, entries in res.get("students", {}).items():
            lr_at = {e["budget"]: e["lr"] for e in entries}
            cells = ["{:.3f} ± {:.3f}".format(*common.mean_std(accs_at(entries, b)))
                     + f" (lr {lr_at[b]:g})" for b in bs]
            rows.append([m] + cells)
        if rows:
            title = "masked-token accuracy" if lk == "mlm" else f"boundary accuracy, level {lk}"
            print(f"\n{title} (mean ± std over seeds {args.seed_list}; each at its best lr)")
            print(common.format_table(["method"] + [f"budget {b}" for b in bs], rows))


def claim_checks(res, args):
    """The README's acceptance checks, computed from this run."""
    checks, b0, budgets = {}, args.budget_list[0], args.budget_list
    st, t, ph, probe = (res.get(k) for k in ("students", "teacher", "phases", "probe"))
    st = st or {}

    def gap(m, other, b):
        return mean_at(st[m], b) - mean_at(st[other], b)
    if "progressive" in st and "ce" in st:
        checks["progressive_minus_ce_smallest_budget"] = gap("progressive", "ce", b0)
        checks["progressive_beats_ce_by_2pts"] = gap("progressive", "ce", b0) >= 0.02
        checks["progressive_ge_ce_every_budget"] = all(gap("progressive", "ce", b) >= 0
                                                       for b in budgets)
    if "progressive" in st and "oneshot" in st:
        checks["progressive_ge_oneshot_every_budget"] = all(gap("progressive", "oneshot", b) >= 0
                                                            for b in budgets)
    if "two_shot" in st and "oneshot" in st:
        checks["two_shot_minus_oneshot_smallest_budget"] = gap("two_shot", "oneshot", b0)
        checks["two_shot_beats_oneshot"] = gap("two_shot", "oneshot", b0) > 0
    if t and ph:
        sl = ph["slopes"]  # mean loss change per step in each phase
        # phase 3 must be there: the run goes on for two checkpoints past the drop, still falling
        checks["three_phases"] = bool(sl["drop"] < 0 and abs(sl["plateau"]) < abs(sl["drop"]) / 3
                                      and ph["drop_end"] < t["steps"][-2] and sl["decay"] < 0
                                      and abs(sl["decay"]) < abs(sl["drop"]) / 3)
    m_robust = probe.get("m_robust") if probe else None
    if m_robust and ph and "3gram" not in m_robust:  # Sec. 4.2 claims it of 3-grams: not shown
        checks["mrobust_peak_in_drop"] = checks["mrobust_falls_10x"] = False
    if m_robust and ph and "3gram" in m_robust:
        med = m_robust["3gram"]["l1"]["median"]  # by name: --windows may list another one first
        # over trained checkpoints: the untrained step 0 is no stage of the curriculum (Sec. 4.2)
        trained = [i for i, s in enumerate(probe["steps"]) if s > 0]
        peak = trained[int(np.nanargmax([med[i] for i in trained]))]
        checks["mrobust_peak_step"] = step = probe["steps"][peak]
        checks["mrobust_peak_in_drop"] = bool(ph["drop_start"] <= step <= ph["drop_end"])
        checks["mrobust_peak_over_final"] = med[peak] / max(med[-1], 1e-12)
        # and a real peak: at least 0.01 (L1), as in lm_pretrain.py (the paper's: 0.6-0.7, Fig. 4)
        checks["mrobust_falls_10x"] = med[peak] >= 0.01 and checks["mrobust_peak_over_final"] >= 10
        # M_robust follows the teacher's loss more than its step (docs/pcfg.md): both read on it
        loss_at = dict(zip(t["steps"], t["val_loss"]))
        checks["mrobust_peak_loss"] = loss_at.get(step)
        checks["drop_end_loss"] = loss_at.get(ph["drop_end"])
    return checks


def minmax_bars(ax, xs, ys, **kw):
    """Mean over seeds with bars from the lowest to the highest seed; ys: one list per x."""
    mean = [sum(y) / len(y) for y in ys]
    bars = [[a - min(y) for a, y in zip(mean, ys)], [max(y) - a for a, y in zip(mean, ys)]]
    ax.errorbar(xs, mean, yerr=bars, fmt="-o", capsize=3, **kw)


def make_figures(levels, args):
    """Fig. 1 right, a panel per level (docs/pcfg_extra.py draws Fig. 4 and the probes)."""
    drawn = [k for k, r in levels.items() if r.get("students") or r.get("teacher")]
    if not drawn:
        return
    plt = common.plt()
    bs = args.budget_list
    fig, axes = plt.subplots(1, len(drawn), figsize=(5.5 * len(drawn), 4), squeeze=False)
    for ax, lk in zip(axes[0], drawn):
        res = levels[lk]
        if res.get("teacher"):
            accs = [teacher_acc_at(args, res["teacher"], b) for b in bs]
            ax.plot(bs, accs, "--o", color="k", label="teacher")
        for m, entries in res.get("students", {}).items():
            minmax_bars(ax, bs, [accs_at(entries, b) for b in bs], color=COLORS[m], label=m)
        mlm = lk == "mlm"
        title = f"BERT on {args.grammar}" if mlm else f"GPT-style on {args.grammar}, level {lk}"
        ylabel = "top-1 accuracy" + (" (masked)" if mlm else " (span ends)")
        ax.set(xlabel="training steps (budget)", xticks=bs, ylabel=ylabel, title=title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    name = "fig1_accuracy.png" if args.objective == "mlm" else "fig_boundary_accuracy.png"
    fig.savefig(os.path.join(args.out, name), dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# 9. Main: teacher -> phases -> probes -> students -> results, per level (mlm: the one level None).
def run_level(args, level):
    heldout = eval_set(args, level)
    res, mode = {}, args.mode
    if mode != "ce" and args.teacher_dir is None:
        train_teacher(args, level, heldout)
    if mode != "ce" or args.teacher_dir:
        res["teacher"] = teacher_curve(args, level)
        res["phases"] = loss_phases(res["teacher"]["steps"], res["teacher"]["val_loss"])
    if mode in ("all", "probe"):
        name = "probe" if level is None else f"probe_level{level}"
        path = os.path.join(args.out, name + ".json")
        resumed = os.path.exists(path) and args.resume
        res["probe"] = common.read_json(path) if resumed else run_probes(args, level)
        common.write_json(res["probe"], path)
    methods = {"all": args.method_list, "teacher": [], "probe": []}.get(mode, [mode])
    if "progressive" in methods:
        args = with_refresh(args, res)
    chosen = stage1_of(args, res) if "two_shot" in methods else None
    if methods:
        sweep = []
        if mode == "all" and chosen is not None:
            sweep = sweep_candidates(args, level, res.get("phases"), chosen)
        students = run_students(args, level, methods, chosen, sweep)
        res["students"], res["by_lr"], res["curves"], rows = students
        if sweep:
            res["two_shot_sweep"] = rows
        if mode == "all" and "probe" in res:
            res["probe"]["students_nt"] = probe_students(args, level, res["students"])
    res["checks"], res["measured"] = common.split_checks(claim_checks(res, args))
    return res


def config_of(args):
    skip = {"resume", "halt_at", "teacher_lr_given", "lrs", "seed_list", "beta_pair",
            "budget_list", "method_list", "level_list", "position_list", "window_dict", "threads"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def results_of(args, levels):
    """results.json: teacher (with phases), students, probe at the top; boundary: per level too."""
    teachers = {lk: dict(r["teacher"], phases=r.get("phases"))
                for lk, r in levels.items() if "teacher" in r}
    if args.objective == "mlm":
        flat = {"config": config_of(args), **levels["mlm"]}
        if teachers:
            flat["teacher"] = teachers["mlm"]
    else:
        per_level = {k: {lk: r[k] for lk, r in levels.items() if k in r}
                     for k in ("probe", "checks", "measured")}
        flat = {"config": config_of(args), "teacher": teachers, "students": {}, **per_level,
                "levels": levels}
        for r in levels.values():
            for m, entries in r.get("students", {}).items():
                flat["students"].setdefault(m, []).extend(entries)
    if args.teacher_dir:
        cfg = common.read_json(os.path.join(args.teacher_dir, "config.json"))
        flat["teacher_config"] = {k: cfg.get(k) for k in TEACHER_TRAINING}
        other = [f"--{k} {cfg[k]!r}" for k in TEACHER_TRAINING if cfg.get(k) != getattr(args, k)]
        if other:
            print(f"note: the teacher in {args.teacher_dir} was trained with {', '.join(other)}, "
                  "not this run's flags; results.json keeps its values as teacher_config")
    return flat


def parse_args(argv=None):
    args = common.parse_with_presets(
        build_parser(), lambda f: PRESETS[(f.preset, f.objective)], argv)
    given = sys.argv[1:] if argv is None else argv
    args.teacher_lr_given = any(a.split("=")[0] == "--teacher_lr" for a in given)
    validate(args)
    return args


def validate(args):
    """Every check that can fail runs before anything is written (exit 2, naming the flag)."""
    common.check_finite_flags(args)
    positive = ["layers", "head_dim", "teacher_heads", "student_heads", "max_len", "batch",
                "teacher_batch", "teacher_steps", "ckpt_every", "eval_size", "eval_every",
                "probe_size", "probe_every", "nt_train", "nt_eval", "nt_steps", "teacher_lr",
                "temperature", "speed", "workers"]
    common.check_positive(args, positive + (["max_steps"] if args.max_steps is not None else []))
    common.check_range(args, {"crop": "[0, inf]", "mask_rate": "[0, 1]", "dropout": "[0, 1)",
                              "warmup": "[0, 1]", "clip": "[0, inf]", "threads": "[0, inf]"})
    common.check_lr_seeds_betas(args)  # sets args.lrs, args.seed_list, args.beta_pair
    common.check_run_flags(args, eval_every_default=4)
    args.budget_list = sorted(set(common.parse_list(args.budgets, int, "--budgets")))
    if args.budget_list[0] < 1:
        fail("--budgets", f"budgets must be at least 1 step, got {args.budgets}")
    args.method_list = common.parse_list(args.methods, str, "--methods")
    if not set(args.method_list) <= set(MODES[3:]):
        fail("--methods", f"allowed: {', '.join(MODES[3:])}; got {args.methods}")
    g = grammar(args.grammar)
    args.level_list = common.parse_list(args.level, int, "--level")
    if any(not 1 <= lv < g["depth"] for lv in args.level_list):
        fail("--level", f"depths must be in 1..{g['depth'] - 1} (0 is the root: the sentence)")
    if args.objective == "mlm":
        args.level_list = [None]
    elif (args.preset == "cpu" and min(args.level_list) < 3 and not args.teacher_dir
          and not args.teacher_lr_given):
        fail("--level", "at the cpu preset's teacher lr the teachers of levels 1 and 2 collapse "
                        "(README); use --level 3, or add --teacher_lr 1e-3 for levels 1 and 2")
    if not 0 <= args.subtree < g["depth"]:
        fail("--subtree", f"must be in 0..{g['depth'] - 1} (0: sentences), got {args.subtree}")
    if args.subtree and args.crop:
        fail("--crop", f"--subtree trains on whole subtrees; it needs --crop 0, got {args.crop}")
    seq_len = args.crop or g["longest_at"][args.subtree] + 1
    if seq_len > args.max_len:
        fail("--max_len", f"must be at least {seq_len} (the longest input), got {args.max_len}")
    args.position_list = common.parse_list(args.probe_positions, int, "--probe_positions")
    if not all(1 <= p < seq_len for p in args.position_list):
        fail("--probe_positions", f"{args.probe_positions}: not all in 1..{seq_len - 1}")
    args.window_dict = {}
    for item in common.parse_list(args.windows, str, "--windows"):
        name, *ends = item.split(":")
        if len(ends) != 2 or not all(e.isdigit() for e in ends):
            fail("--windows", f"expected name:left:right (e.g. 3gram:1:1), got {item!r}")
        left, right = args.window_dict[name] = (int(ends[0]), int(ends[1]))
        if any(p - left < 0 or (args.crop and p + right >= args.crop) for p in args.position_list):
            fail("--windows", f"{item} around a --probe_positions position leaves the sequence")
    args.refresh = steps_or_auto(args.refresh, "--refresh", 1)  # auto: with_refresh
    args.T = steps_or_auto(args.T, "--T", 0)  # auto: schedule_for
    two_shot = args.mode == "two_shot" or (args.mode == "all" and "two_shot" in args.method_list)
    if two_shot and args.T != "auto" and args.T >= args.budget_list[0]:
        fail("--T", f"must be below the smallest budget ({args.budget_list[0]}), got {args.T}")
    if args.two_shot_sweep not in ("auto", "drop", "none"):
        common.parse_list(args.two_shot_sweep, int, "--two_shot_sweep")
    args.device = str(common.pick_device(args.device))
    args.out = args.out or os.path.join("out/pcfg", f"{args.preset}-{args.objective}-{args.mode}")
    # the teacher (this run's, or --teacher_dir's if made for the same setting) covers it all
    d = args.teacher_dir
    steps = {None: list(range(0, args.teacher_steps, args.ckpt_every)) + [args.teacher_steps]}
    if d is not None:
        if not os.path.exists(os.path.join(d, "config.json")):
            fail("--teacher_dir", f"{d} holds no config.json (expected an earlier run's --out)")
        cfg = common.read_json(os.path.join(d, "config.json"))
        same = ["objective", "grammar", "crop", "subtree", "max_len", "layers", "head_dim",
                "teacher_heads", "mask_rate", "hide_masked_keys"]
        diff = [f"{k}={cfg.get(k)!r} (here {getattr(args, k)!r})"
                for k in same if cfg.get(k) != getattr(args, k)]
        if diff:
            fail("--teacher_dir", f"{d} was made for another setting: " + ", ".join(diff))
        steps = {level: common.saved_steps(teacher_folder(d, level)) for level in args.level_list}
    for level, saved in steps.items():
        if 0 not in saved:
            fail("--teacher_dir", f"{d} holds no teacher checkpoints in {teacher_folder(d, level)}")
        if args.budget_list[-1] > saved[-1]:  # budget B learns from the teacher's first B x speed
            fail("--budgets", f"{args.budget_list[-1]} is longer than the teacher ({saved[-1]})")
        if args.ckpt != "auto" and int(args.ckpt) not in saved:
            fail("--ckpt", f"{args.ckpt} is not a teacher checkpoint (see --ckpt_every)")


def steps_or_auto(value, flag, least):
    if value != "auto" and not (str(value).isdigit() and int(value) >= least):
        fail(flag, f"expected at least {least} steps or auto, got {value!r}")
    return value if value == "auto" else int(value)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    common.prepare_run_dir(args.out, config_of(args), args.resume)
    t_start = time.time()
    levels = {"mlm" if level is None else str(level): run_level(args, level)
              for level in args.level_list}
    flat = results_of(args, levels)
    flat["wall_s"] = time.time() - t_start
    common.write_json(flat, os.path.join(args.out, "results.json"))
    print_table(levels, args)
    for lk, r in levels.items():
        if r["checks"]:
            print(f"\nchecks ({lk}):", r["checks"])
            print("measured:", {k: round(v, 4) if isinstance(v, float) else v
                                for k, v in r["measured"].items()})
    make_figures(levels, args)
    print(f"\nwrote {args.out}/results.json and figures in {time.time() - t_start:.0f}s")
    return flat


if __name__ == "__main__":
    main()
