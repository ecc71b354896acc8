"""BERT pretraining on real English text: progressive distillation against one-shot and CE (Sec. 5).

A BERT teacher's masked-language-modeling loss shows three phases, its median 3-gram M_robust peaks
at the loss inflection, and a small student learns faster from the teacher's checkpoints in order
(progressive) than from its last one (one-shot) or from the masked words (CE): the paper's Fig. 5.
Model, masking, schedule and probe copy pcfg.py's (tested). Sections: the mechanism (0-6), the
engine (7: data parallel, many students, resume), the study (8-9).

    python data/prepare_lm_corpus.py          # once: fetch and check the registry corpus
    python lm_pretrain.py                     # the whole CPU study
    python lm_pretrain.py --data my_texts/    # your own .txt files (documents split by blank lines)
    torchrun --nproc_per_node=8 lm_pretrain.py --preset paper --data /path/to/wiki_books/

To copy: this file and common.py; needs torch, numpy and matplotlib.
"""
import argparse
import contextlib
import datetime
import functools
import hashlib
import heapq
import itertools
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import time
from collections import Counter

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # before torch: same seed, same numbers on CPU
import common
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from common import fail

# --------------------------------------------------------------------------------------------------
# 0. Config: presets and flags (their checks: parse_args(), in the engine).

PRESETS = {
    # Sec. 5 (guessed where silent: docs/lm_pretrain.md), for GPUs and a Wikipedia + books --data
    "paper": dict(
        tokenizer="bpe", seq_len=128, vocab_size=30522, min_count=1, heldout_frac=0.01, dropout=0.1,
        teacher_layers=12, teacher_heads=12, student_layers=4, student_heads=4, head_dim=64,
        teacher_lr=5e-4, teacher_schedule="cosine", teacher_warmup=0.06, teacher_steps=128_000,
        batch=512, micro_batch=64, lr_grid="1e-3,5e-4,2.5e-4", schedule="cosine", warmup=0.06,
        ckpt_every=4000, refresh=8000, budgets="24000,60000,120000", T=12_000,
        eval_every=1000, eval_seqs=4096, probe_seqs=1024),
    # Sec. 5's protocol on characters, chosen by pilots (docs/lm_pretrain.md): budgets from 2 x C1
    "cpu": dict(
        tokenizer="char", vocab_size=100, min_count=200, seq_len=32,
        heldout_frac=0.05, batch=32, micro_batch=32, teacher_layers=2, teacher_heads=16,
        student_layers=2, student_heads=1, head_dim=8, teacher_lr=3e-3, teacher_steps=6500,
        ckpt_every=250, lr_grid="3e-3", refresh="auto", budgets="6500,9750,13000", T=3250,
        temperature=1.0, eval_every=250, eval_seqs=512, probe_seqs=128, probe_stride=8, workers=2),
    "smoke": dict(  # seconds, for tests (with --data tests/data/...)
        seq_len=32, vocab_size=300, min_count=1, heldout_frac=0.2, batch=8, micro_batch=4,
        teacher_layers=1, teacher_heads=2, student_layers=1, student_heads=1, head_dim=8,
        teacher_lr=3e-3, teacher_steps=20, ckpt_every=4, lr_grid="3e-3", refresh="auto",
        budgets="10,20", T=5, eval_every=4, eval_seqs=16, probe_seqs=4, probe_stride=8),
}
MODES = ["all", "teacher", "probe", "ce", "oneshot", "progressive", "two_shot"]
METHODS = ["ce", "oneshot", "progressive", "two_shot"]
SPECIALS = ["[PAD]", "[MASK]", "[CLS]", "[SEP]", "[UNK]"]
PAD, MASK, CLS, SEP, UNK = range(len(SPECIALS))
# the probe's n-gram windows: words left and right of the probed position (Sec. 4.2)
WINDOWS = {"3-gram": (1, 1), "5-gram": (2, 2), "4-gram": (2, 1), "2-gram": (1, 0)}
# a --teacher_dir's teacher must have read the same text, the same tokens, at the same size
TEACHER_KEYS = ["data", "heldout_frac", "min_doc_tokens", "tokenizer", "vocab_size", "min_count",
                "seq_len", "teacher_layers", "teacher_heads", "head_dim"]


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--mode", default="all", choices=MODES, help="the whole study or one part")
    a("--preset", default="cpu", choices=list(PRESETS), help="defaults of the flags")
    a("--data", help="a .txt file or a folder of them (default: the registry corpus)")
    a("--cache", default=os.path.join("data", "lm_corpus"), help="registry corpus, token caches")
    a("--heldout_frac", type=float, help="fraction of documents held out (by a hash of each)")
    a("--min_doc_tokens", type=int, default=8, help="documents with fewer tokens are dropped")
    a("--tokenizer", default="word", choices=["word", "bpe", "char"], help="lower-cased words and "
      "punctuation, sub-words learned on the training split, or characters (one space per run)")
    a("--vocab_size", type=int, help="words, pieces or characters, the 5 special tokens included")
    a("--min_count", type=int, help="tokens seen fewer times in the training split become [UNK]")
    a("--seq_len", type=int, help="tokens per training and held-out sequence, [CLS] included")
    a("--mask_rate", type=float, default=0.15, help="BERT's (80%% [MASK], 10%% random, 10%% kept)")
    a("--teacher_layers", type=int, help="teacher encoder layers")
    a("--teacher_heads", type=int, help="teacher attention heads (width = heads x head_dim)")
    a("--student_layers", type=int, help="student encoder layers")
    a("--student_heads", type=int, help="student attention heads")
    a("--head_dim", type=int, help="attention head dimension (teacher and student)")
    a("--student_head_dim", type=int, help="the student's, if not --head_dim")
    a("--dropout", type=float, default=0.0, help="dropout (BERT: 0.1)")
    a("--teacher_lr", type=float, help="teacher peak learning rate")
    a("--teacher_schedule", default="constant", choices=["constant", "cosine"], help="after warmup")
    a("--teacher_warmup", type=float, default=0.0, help="teacher linear warmup, fraction of steps")
    a("--teacher_floor", type=float, default=0.0, help="the teacher's cosine decays to floor x lr")
    a("--teacher_steps", type=int, help="teacher optimizer steps")
    a("--ckpt_every", type=int, help="teacher checkpoint (and probe) interval in steps")
    a("--teacher_dir", help="reuse the teacher of an earlier run (its --out folder)")
    a("--batch", type=int, help="global batch in sequences (paper: 512), over all processes")
    a("--micro_batch", type=int, help="sequences per forward pass; gradients accumulate")
    a("--lr", type=float, help="one student learning rate (replaces --lr_grid)")
    a("--lr_grid", help="student learning rates; each method is reported at its best one")
    a("--schedule", default="constant", choices=["constant", "cosine"], help="lr after warmup")
    a("--warmup", type=float, default=0.0, help="student linear warmup, fraction of a run's steps")
    a("--floor", type=float, default=0.0, help="the students' cosine decays to floor x lr")
    a("--betas", default="0.9,0.95", help="AdamW betas (paper: 0.9, 0.95)")
    a("--weight_decay", type=float, default=0.0, help="AdamW weight decay (paper: 0)")
    a("--clip", type=float, default=1.0, help="gradient-norm clipping (HF's default); 0 = off")
    a("--budgets", help="student step budgets (paper: 24k, 60k, 120k)")
    a("--seeds", default="0,1,2", help="student seeds (the paper averages 3)")
    a("--temperature", type=float, default=1e-20, help="teacher softmax temperature; 1e-20: argmax")
    a("--speed", type=float, default=1.0, help="teacher steps per student step")
    a("--refresh", help="progressive: steps between teacher checkpoints; auto: the inflection C1")
    a("--ckpt", default="auto", help="two_shot stage-1 checkpoint step, or auto: the inflection C1")
    a("--T", type=int, help="two_shot: steps on the stage-1 checkpoint (Alg. 1's (2,T))")
    a("--eval_every", type=int, help="evaluation interval in steps; divides --ckpt_every")
    a("--eval_seqs", type=int, help="held-out sequences for loss and masked-token accuracy")
    a("--probe_seqs", type=int, help="held-out sequences for the n-gram probe")
    a("--probe_stride", type=int, default=16, help="probe every stride-th position")
    a("--out", help="run folder (default out/lm_pretrain/<preset>-<mode>)")
    a("--resume", action="store_true", help="continue the run in --out from its last checkpoints")
    a("--save_every", type=int, help="student resume-checkpoint interval (default: 10 evals)")
    a("--workers", type=int, default=1, help="processes for the students (CPU: 1 thread each)")
    a("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (torchrun: LOCAL_RANK)")
    a("--halt_at", help=argparse.SUPPRESS)  # tests: "teacher:N" or "students:N"
    return p


# --------------------------------------------------------------------------------------------------
# 1. Data. Documents: text between blank lines, a hash of each picks its split. Tokens: lower-cased
# words (BERT's basic tokenizer: a probed n-gram is n words), sub-words (bpe) or characters.

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
TOKENIZER_VERSION = 2  # 2: per-token source ids of the held-out split


def read_documents(args):
    """(documents, the source of each: its .txt file's name, data hash) of --data or the corpus."""
    path = args.data or os.path.join(args.cache, "text")
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(root, f) for root, _, fs in os.walk(path) for f in fs if f.endswith(".txt"))
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
    text = text.lower()
    return list(" ".join(text.split())) if kind == "char" else TOKEN_RE.findall(text)


def merge_pair(pieces, pair):
    """Every occurrence of the adjacent pair merged into one piece, left to right, as BPE does (a
    merged piece is longer than pair[0], so it never starts another merge)."""
    out = []
    for piece in pieces:
        if out and (out[-1], piece) == pair:
            out[-1] = pair[0] + pair[1][2:]  # "##" marks a piece inside a word
        else:
            out.append(piece)
    return out


def split_word(word, rank):
    """A word's pieces ("##": inside a word, as BERT's WordPiece): the merges, lowest rank first."""
    sym = [word[0]] + ["##" + c for c in word[1:]]
    while len(sym) > 1 and (best := min(zip(sym, sym[1:]),
                                        key=lambda p: rank.get(p, math.inf))) in rank:
        sym = merge_pair(sym, best)
    return sym


def learn_merges(counts, n_pieces, min_count):
    """BPE (Sennrich et al. 2016) of {word: count}: merge the most frequent adjacent pair (ties:
    the first seen; a heap of counts) until merges and letters seen min_count times are n_pieces."""
    words, freq = [split_word(w, {}) for w in counts], list(counts.values())
    pairs, first_seen, where, letters, merges = {}, {}, {}, Counter(), []
    heap, changed, tick = [], set(), itertools.count()

    def count(i, sign):
        for p in zip(words[i], words[i][1:]):
            first_seen.setdefault(p, next(tick))  # in pairs and first_seen alike, or in neither
            pairs[p] = pairs.get(p, 0) + sign * freq[i]
            where.setdefault(p, set()).add(i)
            changed.add(p)

    def entry(p):  # pair p's heap entry now; an entry that differs is stale, skipped when popped
        return (-pairs[p], first_seen[p], p) if p in pairs else None

    def push_changed():  # a heap entry per changed count
        for p in changed & pairs.keys():
            heapq.heappush(heap, entry(p))
        changed.clear()

    for i in range(len(words)):
        count(i, 1)
        letters.update({s: n * freq[i] for s, n in Counter(words[i]).items()})
    push_changed()
    n_letters = sum(c >= min_count for c in letters.values())
    while n_letters + len(merges) < n_pieces:
        while heap and entry(heap[0][2]) != heap[0]:
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


def load_data(args):
    """Token streams, held-out sources, vocabulary, sources, cache folder (written once)."""
    docs, doc_sources, data_hash = read_documents(args)
    settings = [TOKENIZER_VERSION, data_hash, args.heldout_frac, args.min_doc_tokens,
                args.vocab_size, args.min_count]
    settings += [args.tokenizer] if args.tokenizer != "word" else []  # word caches keep their names
    key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]
    folder = os.path.join(args.cache, f"tokenized-{key}")
    if os.path.exists(os.path.join(folder, "streams.pt")):
        tok = common.read_json(os.path.join(folder, "tokenizer.json"))
        streams = common.load_checkpoint(os.path.join(folder, "streams.pt"))
        return streams, tok["vocab"], tok["sources"], folder
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
        fail("--data", f"{where}: no usable documents (--min_doc_tokens {args.min_doc_tokens})")
    for name in split:
        if not split[name]:
            fail("--heldout_frac", f"the {name} split of {where} is empty (of {n_docs} usable)")
    merges = None
    if args.tokenizer == "bpe":  # sub-words learned on the training split, every document cut
        train_words = Counter(w for toks in split["train"] for w in toks)
        merges = learn_merges(train_words, args.vocab_size - len(SPECIALS), args.min_count)
        order = {p: r for r, p in enumerate(merges)}
        every_word = {w for v in split.values() for toks in v for w in toks}
        pieces = {w: split_word(w, order) for w in every_word}
        split = {k: [[p for w in toks for p in pieces[w]] for toks in v] for k, v in split.items()}
    vocab = build_vocab(split["train"], args.vocab_size, args.min_count)
    if len(vocab) == len(SPECIALS):
        fail("--min_count", f"no word of {where} occurs {args.min_count} times; lower --min_count")
    index = {w: i for i, w in enumerate(vocab)}
    streams = {k: torch.tensor([i for toks in v for i in encode(toks, index) + [SEP]],
                               dtype=torch.int32) for k, v in split.items()}
    lengths = torch.tensor([len(toks) + 1 for toks in split["heldout"]])  # the document and [SEP]
    streams["heldout_source"] = torch.tensor(held_src).int().repeat_interleave(lengths)
    for name in split:
        if len(streams[name]) < args.seq_len:
            fail("--seq_len", f"the {name} split has {len(streams[name])} tokens, under --seq_len")
    pattern = TOKEN_RE.pattern if args.tokenizer != "char" else None
    tok = {"version": TOKENIZER_VERSION, "lowercase": True, "tokenizer": args.tokenizer,
           "pattern": pattern, "specials": SPECIALS, "merges": merges, "settings": settings,
           "sources": sources, "vocab": vocab}
    common.write_json(tok, os.path.join(folder, "tokenizer.json"))
    common.save_checkpoint(streams, os.path.join(folder, "streams.pt"))  # last: cache complete
    return streams, vocab, sources, folder


def pack(stream, seq_len):
    """[CLS] + the next seq_len - 1 tokens of the stream, for as many full sequences as fit."""
    n = (len(stream) - 1) // (seq_len - 1)
    body = stream[:n * (seq_len - 1)].long().view(n, seq_len - 1)
    return torch.cat([torch.full((n, 1), CLS), body], 1)


def heldout_sets(args, streams):
    """Eval set (a seeded sample of all held-out sequences), its sources, probe set, their count."""
    held, src = (pack(streams[k], args.seq_len) for k in ("heldout", "heldout_source"))
    order = torch.randperm(len(held), generator=torch.Generator().manual_seed(12345))
    eval_ids, probe_ids = order[:args.eval_seqs], order[:args.probe_seqs]
    return held[eval_ids], src[eval_ids], held[probe_ids], len(held)


def train_batch(args, train, step, seed):
    """Global batch `step`: [CLS] + seq_len - 1 tokens from seeded random offsets of the stream."""
    gen = torch.Generator().manual_seed(1_000_003 * seed + step)
    start = torch.randint(len(train) - args.seq_len + 2, (args.batch, 1), generator=gen)
    body = train[start + torch.arange(args.seq_len - 1)].long()
    return torch.cat([torch.full((args.batch, 1), CLS), body], 1)


def mask_batch(args, ids, seed, step):
    """BERT masking: 15% of word tokens selected (never specials or [UNK]), 80/10/10 [MASK]/random/
    kept: (inputs, labels). Every key stays visible (BERT; the PCFG code hides selected keys)."""
    gen, rate = torch.Generator().manual_seed(7_919 * seed + step), args.mask_rate
    u = torch.rand(ids.shape, generator=gen)
    pick = torch.randint(args.vocab_actual - len(SPECIALS), ids.shape, generator=gen)  # a word
    selected = (u < rate) & (ids >= len(SPECIALS))
    as_mask = selected & (u < 0.8 * rate)
    as_random = selected & (u >= 0.8 * rate) & (u < 0.9 * rate)
    inputs = torch.where(as_mask, torch.full_like(ids, MASK), ids)
    inputs = torch.where(as_random, pick + len(SPECIALS), inputs)
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    return inputs, labels


# --------------------------------------------------------------------------------------------------
# 2. Model: BERT in plain PyTorch (Sec. 4.3; pcfg.py's encoder): post-LN blocks, GELU MLPs of width
# 4d, init N(0, 0.02), MLM head (dense, GELU, LN), decoder tied to the embeddings. L = seq_len.

class Block(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)  # attention in, out
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)  # MLP in, out
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=1e-12), nn.LayerNorm(d, eps=1e-12)

    def forward(self, h):  # (B, L, d) -> (B, L, d)
        B, L, d = h.shape
        q, k, v = self.qkv(h).view(B, L, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # (B, nh, L, hs)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # every key: no padding
        a = self.proj(a.transpose(1, 2).reshape(B, L, d))
        h = self.ln1(h + F.dropout(a, p, self.training))
        return self.ln2(h + F.dropout(self.out(F.gelu(self.fc(h))), p, self.training))


class Encoder(nn.Module):
    """ids (B, L), select (B, L) bool or None -> logits (n, vocab) at n selected or (B, L, vocab)"""

    def __init__(self, vocab_size, max_len, layers, heads, head_dim, dropout=0.0):
        super().__init__()
        d, self.dropout = heads * head_dim, dropout
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
        h = self.ln_emb(self.tok(ids) + self.pos.weight[:ids.shape[1]])  # (B, L, d)
        h = F.dropout(h, self.dropout, self.training)
        for block in self.blocks:
            h = block(h)
        out = h if select is None else h[select]  # (n, d)
        return self.head_ln(F.gelu(self.head(out))) @ self.tok.weight.T + self.head_bias


def make_model(args, role, seed):
    torch.manual_seed(seed)  # the encoder's init draws from the global generator
    layers, heads = getattr(args, f"{role}_layers"), getattr(args, f"{role}_heads")
    head_dim = args.student_head_dim if role == "student" else args.head_dim
    model = Encoder(args.vocab_actual, args.seq_len, layers, heads, head_dim, args.dropout)
    return model.to(args.device)


def masked_logits(model, inputs, labels):
    """Logits (n, vocab) at the n masked positions only (the MLM head costs most), labels (n,)."""
    sel = labels != -100
    return model(inputs, select=sel), labels[sel]


# --------------------------------------------------------------------------------------------------
# 3. Teacher (Sec. 5): MLM with CE, AdamW, a loop that saves a checkpoint every --ckpt_every steps.

def train_step(args, model, opt, lr, data, step, seed, rank, teacher=None):
    """One step at `lr` on global batch `step`, CE or distill_loss (section 6): (this process's
    summed loss, the batch's masked count). N torchrun processes give 1 process's gradient."""
    for group in opt.param_groups:
        group["lr"] = lr
    ids = train_batch(args, data["train"], step, seed)
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
        sync = args.world == 1 or i == len(chunks) - 1  # DDP: all-reduce after the last micro-batch
        with contextlib.nullcontext() if sync else model.no_sync():
            if teacher is None:  # BERT's loss: CE on the masked words
                logits, y = masked_logits(model, inputs[part], labels[part])
                loss = F.cross_entropy(logits.float(), y, reduction="sum")
            else:
                loss = distill_loss(args, model, teacher, inputs[part], labels[part])
            (loss * args.world / n_masked).backward()  # DDP averages over processes
        total += loss.detach()
    if args.clip > 0:  # on the full gradient: DDP has averaged it by now
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
    opt.step()
    return total, n_masked


@torch.no_grad()
def evaluate(args, model, data, rank):
    """Masked-token loss, top-1 accuracy, {source: accuracy} on the fixed held-out set (sharded)."""
    inputs, labels, source = data["heldout"]
    n_sources = len(data["sources"])
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=args.device)  # loss, correct, count
    by_source = torch.zeros(2, n_sources, dtype=torch.float64, device=args.device)  # correct, count
    for c in range(rank * args.micro_batch, len(inputs), args.world * args.micro_batch):
        part = slice(c, c + args.micro_batch)
        logits, y = masked_logits(model, inputs[part].to(args.device), labels[part].to(args.device))
        hit = (logits.argmax(-1) == y).double()
        src = source[part][labels[part] != -100].long().to(args.device)
        loss = F.cross_entropy(logits.float(), y, reduction="sum").double()
        sums += torch.stack([loss, hit.sum(), torch.tensor(len(y), device=args.device)])
        by_source += torch.stack([src.bincount(w, n_sources) for w in (hit, torch.ones_like(hit))])
    for total in (sums, by_source) if args.world > 1 else ():
        dist.all_reduce(total)
    model.train()
    acc_by_source = {k: (c / n).item() for k, c, n in zip(data["sources"], *by_source) if n > 0}
    return (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item(), acc_by_source


def teacher_ckpt(run, step=None):  # a run's teacher checkpoint at `step`, or the folder of them
    folder = os.path.join(run, "ckpt", "teacher")
    return folder if step is None else os.path.join(folder, f"step_{step:09d}.pt")


@functools.lru_cache(maxsize=4)  # the schedule revisits checkpoints
def load_teacher(run, step, device):
    """The teacher's checkpoint at `step`: a dict (model, step, val_loss, val_acc)."""
    return common.load_checkpoint(teacher_ckpt(run, step), device)


def train_teacher(args, data, rank):
    """The teacher: evaluated every --eval_every steps, saved every --ckpt_every (resumable)."""
    state_path = os.path.join(args.out, "ckpt", "teacher_state.pt")
    total = args.teacher_steps
    model = make_model(args, "teacher", 0)
    ddp, opt, state = start_run(args, model, args.teacher_lr, state_path)
    start = state["step"]
    if rank == 0:
        cut_records(args, "teacher", start)
    loss_sum, count, t0 = torch.zeros((), device=args.device), 0, time.time()
    for step in range(start, total + 1):  # step: optimizer steps taken so far
        # evaluate and save at step 0 too; a resumed run did so at `start` before it stopped
        if (step % args.eval_every == 0 or step == total) and (step > start or step == 0):
            train_loss = mean_loss(args, loss_sum, count, "teacher", step) if step > 0 else None
            loss_sum, count = torch.zeros_like(loss_sum), 0
            val_loss, acc, by_source = evaluate(args, model, data, rank)
            record = {"role": "teacher", "step": step, "val_loss": val_loss, "val_acc": acc,
                      "val_acc_by_source": by_source, "train_loss": train_loss}
            if rank == 0:
                common.append_jsonl(os.path.join(args.out, "metrics.jsonl"), record)
            if rank == 0 and (step % args.ckpt_every == 0 or step == total):
                ckpt = {"model": model.state_dict(), "step": step, "val_loss": val_loss,
                        "val_acc": acc}
                common.save_checkpoint(ckpt, teacher_ckpt(args.out, step))
                common.save_checkpoint({**ckpt, "optimizer": opt.state_dict()}, state_path)
            if rank == 0 and step and (step % (10 * args.eval_every) == 0 or step == total):
                print(f"teacher step {step:>7d}  val loss {val_loss:.3f}  val acc {acc:.3f}  "
                      f"train loss {train_loss:.3f}  ({time.time() - t0:.0f}s)", flush=True)
        if step == total:
            break
        factor = common.lr_factor(step, total, args.teacher_schedule, args.teacher_warmup,
                                  args.teacher_floor)
        torch.manual_seed(step)  # dropout: the same per step, resumable
        loss, n = train_step(args, ddp, opt, args.teacher_lr * factor, data, step, 0, rank)
        loss_sum, count = loss_sum + loss, count + n
        halt_if_asked(args, "teacher", step + 1)
    barrier(args)


def teacher_curve(args):
    """Validation loss and accuracy at each saved checkpoint, the last one's accuracy per source."""
    run = args.teacher_dir or args.out  # the run that trained the teacher
    steps = common.saved_steps(teacher_ckpt(run))
    rec = {r["step"]: r for r in common.read_jsonl(os.path.join(run, "metrics.jsonl"))
           if r["role"] == "teacher"}
    return {"steps": steps, "val_loss": [rec[s]["val_loss"] for s in steps],
            "val_acc": [rec[s]["val_acc"] for s in steps],
            "acc_by_source": rec[steps[-1]].get("val_acc_by_source")}


# --------------------------------------------------------------------------------------------------
# 4. The teacher's loss phases (Sec. 5, Fig. 5 left): plateau, drop, decay; C1 is the inflection.

def loss_phases(steps, losses, frac=0.25):
    """Plateau, drop, decay (Sec. 4.2, Fig. 4 left): a piecewise-linear fit on log(1 + step) starts
    plateau and drop; the drop ends where descent < `frac` x its peak, whose interval ends at C1.
    pcfg.py's function and rule, copied: each script stands alone."""
    s, y, n, err = np.asarray(steps, float), np.asarray(losses, float), len(steps), {}
    if n < 6:
        return None
    x = np.log1p(s)
    for i, j, k in itertools.combinations(range(1, n - 1), 3):  # breakpoints i < j < k
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


# --------------------------------------------------------------------------------------------------
# 5. Distillation schedule (pcfg.py's rules). Horizon: at budget B a student learns from the teacher
# run cut at min(speed x B, last step), trained as long as itself (Fig. 1 right). two_shot: Alg. 1.

def horizon_steps(saved, args, budget):
    return [s for s in saved if s <= min(args.speed * budget, saved[-1])]


def schedule_ckpt(args, method, t, saved, stage1, budget):
    """Teacher checkpoint at student step t of a run of `budget` steps (saved: all checkpoints)."""
    saved = horizon_steps(saved, args, budget)
    if method == "oneshot":
        return saved[-1]
    if method == "progressive":
        return common.progressive_ckpt(t, saved, args.speed, args.refresh)
    if method == "two_shot":  # the stage-1 checkpoint (clamped into the horizon) for T steps
        return max(s for s in saved if s <= stage1) if t < args.T else saved[-1]
    raise ValueError(method)


# --------------------------------------------------------------------------------------------------
# 6. Students (Fig. 5 right): CE on the masked words, or distillation from the scheduled checkpoint.

def distill_loss(args, model, teacher, inputs, labels):
    """Sec. 2: CE against softmax(teacher / --temperature) at the same input's masked positions."""
    logits, _ = masked_logits(model, inputs, labels)
    with torch.no_grad():
        t_logits, _ = masked_logits(teacher, inputs, labels)
        q = common.distill_targets(t_logits, args.temperature)
    return common.soft_cross_entropy(logits, q).sum()


def train_student(args, data, saved, stage1, rank, job):
    """One student run, resumable: {budget: {"acc", "loss", "acc_by_source", "teacher_last"}}."""
    method, lr, seed, total = job["method"], job["lr"], job["seed"], max(job["budgets"])
    model = make_model(args, "student", 1000 + seed)
    teacher = make_model(args, "teacher", 0).eval() if method != "ce" else None
    ddp, opt, state = start_run(args, model, lr, job["state"])
    start, at_budget = state["step"], state.get("at_budget", {})
    loss_sum, count, in_teacher, t0 = torch.zeros((), device=args.device), 0, None, time.time()
    for step in range(start, total + 1):  # step: optimizer steps taken so far
        if step > start and (step % args.eval_every == 0 or step in job["budgets"]):
            train_loss = mean_loss(args, loss_sum, count, job["name"], step)
            record = {"role": "student", "run": job["name"], "step": step, "train_loss": train_loss,
                      "teacher_ckpt": in_teacher}
            loss_sum, count = torch.zeros_like(loss_sum), 0
            if step in job["budgets"]:  # held-out evaluation only at the budgets: it costs steps
                val_loss, acc, by_source = evaluate(args, model, data, rank)
                at_budget[str(step)] = {"acc": acc, "loss": val_loss, "acc_by_source": by_source,
                                        "teacher_last": in_teacher}
                record.update(val_loss=val_loss, val_acc=acc)
            if rank == 0:
                common.append_jsonl(os.path.join(args.out, "metrics.jsonl"), record)
            if rank == 0 and step % args.save_every == 0 and step < total:
                state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step}
                common.save_checkpoint({**state, "at_budget": at_budget}, job["state"])
        if step == total:
            break
        want = None if teacher is None else schedule_ckpt(args, method, step, saved, stage1, total)
        if want != in_teacher:  # the scheduled checkpoint, loaded when it changes
            ckpt = load_teacher(args.teacher_dir or args.out, want, args.device)
            teacher.load_state_dict(ckpt["model"])
            in_teacher = want
        factor = common.lr_factor(step, total, args.schedule, args.warmup, args.floor)
        torch.manual_seed(1_000_003 * seed + step)  # dropout: the same per step, resumable
        loss, n = train_step(args, ddp, opt, lr * factor, data, step, 1000 + seed, rank, teacher)
        loss_sum, count = loss_sum + loss, count + n
        halt_if_asked(args, "students", step + 1)
    if rank == 0:
        accs = "  ".join(f"{b}: acc {at_budget[str(b)]['acc']:.4f}" for b in job["budgets"])
        print(f"student {job['name']:<36} {accs}  ({time.time() - t0:.0f}s)", flush=True)
    return at_budget


# --------------------------------------------------------------------------------------------------
# 7. Engine: data-parallel plumbing (torchrun), many students, resume, the checks on the flags.

def barrier(args):
    if args.world > 1:
        dist.barrier()


def mean_loss(args, loss_sum, count, name, step):  # per masked token since the last, all processes
    if args.world > 1:
        dist.all_reduce(loss_sum)
    train_loss = loss_sum.item() / max(1, count)
    common.check_finite(train_loss, f"{name} training loss at step {step}")
    return train_loss


def halt_if_asked(args, role, step):  # tests: die as a killed job would; --resume ends the same
    if args.halt_at == f"{role}:{step}":
        print(f"halting at {role} step {step} (--halt_at)", flush=True)
        os._exit(1)


def start_run(args, model, lr, path):
    """(the model as torchrun's processes train it, AdamW, --resume's state at `path` or step 0)"""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=args.beta_pair,
                            weight_decay=args.weight_decay)
    state = {"step": 0}
    if os.path.exists(path):
        state = common.load_checkpoint(path, args.device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    if args.world == 1:
        return model, opt, state
    ids = [torch.device(args.device).index] if args.device.startswith("cuda") else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids), opt, state


def cut_records(args, run, step):
    """`run`'s records in metrics.jsonl after `step` dropped (what a killed run logged)."""
    metrics = os.path.join(args.out, "metrics.jsonl")
    records = common.read_jsonl(metrics)
    common.rewrite_jsonl(metrics, [r for r in records
                                   if r.get("run", r["role"]) != run or r["step"] <= step])


def student_jobs(args, methods, saved):
    """One job per (method, seed, lr, budget); at a constant lr without warmup, budgets that see the
    same teacher (CE: none; else the same horizon, section 5) share one run, read at each."""
    jobs = []
    for method, lr, seed in itertools.product(methods, args.lrs, args.seed_list):
        groups = {}
        for b in args.budget_list:
            horizon = None if method == "ce" else horizon_steps(saved, args, b)[-1]
            shared = args.schedule == "constant" and args.warmup == 0
            groups.setdefault(horizon if shared else b, []).append(b)
        for budgets in groups.values():
            name = f"{method}-lr{lr:g}-seed{seed}-b{max(budgets)}"
            jobs.append({"method": method, "lr": lr, "seed": seed, "budgets": budgets, "name": name,
                         "state": os.path.join(args.out, "ckpt", "students", name + ".pt")})
    return jobs


def run_students(args, methods, data, stage1, rank):
    """Every job (the finished ones are in students.json: --resume skips them). Per method, each
    budget's rows at the lr of best mean accuracy (the paper tunes it); every lr's rows second."""
    done_path = os.path.join(args.out, "students.json")
    done = common.read_json(done_path) if os.path.exists(done_path) else {}
    saved = common.saved_steps(teacher_ckpt(args.teacher_dir or args.out))
    jobs = [job for job in student_jobs(args, methods, saved) if job["name"] not in done]
    run = functools.partial(train_student, args, data, saved, stage1, rank)
    for job in jobs if rank == 0 else ():  # a resumed job's late records: cut before any appends
        step = common.load_checkpoint(job["state"])["step"] if os.path.exists(job["state"]) else 0
        cut_records(args, job["name"], step)
    n = min(args.workers, len(jobs))  # one thread each; every job seeds itself: same numbers
    pool = mp.get_context("spawn").Pool(n, torch.set_num_threads, (1,)) if n > 1 else None
    for job, result in zip(jobs, pool.imap(run, jobs) if pool else map(run, jobs)):
        done[job["name"]] = {**{k: job[k] for k in ("method", "lr", "seed", "budgets")},
                             "at_budget": result}
        if rank == 0:
            common.write_json(done, done_path)
            with contextlib.suppress(FileNotFoundError):  # its resume state, no longer needed
                os.remove(job["state"])
        barrier(args)
    if pool:
        pool.close()
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


def parse_args(argv=None):
    """The flags, every check on them before anything is written (the text's: in load_data)."""
    args = common.parse_with_presets(build_parser(), lambda f: PRESETS[f.preset], argv)
    common.check_finite_flags(args)  # nan or inf in any float flag: exit 2 before anything else
    args.student_head_dim = args.student_head_dim or args.head_dim
    common.check_positive(args, [
        "min_doc_tokens", "seq_len", "teacher_layers", "teacher_heads", "student_layers",
        "student_heads", "head_dim", "student_head_dim", "batch", "micro_batch", "teacher_steps",
        "ckpt_every", "eval_every", "eval_seqs", "workers", "probe_seqs", "probe_stride",
        "min_count", "teacher_lr", "temperature", "speed"])
    common.check_range(args, {  # vocab_size: 5 specials and a word; seq_len: [CLS] and a 3-gram
        "vocab_size": "[6, inf]", "seq_len": "[4, inf]", "heldout_frac": "(0, 1)",
        "mask_rate": "(0, 1)", "dropout": "[0, 1)", "warmup": "[0, 1)", "floor": "[0, 1]",
        "teacher_warmup": "[0, 1)", "teacher_floor": "[0, 1]", "weight_decay": "[0, inf]",
        "clip": "[0, inf]", "T": "[0, inf]"})
    if args.ckpt_every % args.eval_every:
        fail("--eval_every", f"must divide --ckpt_every ({args.ckpt_every}), got {args.eval_every}")
    if args.refresh != "auto":
        args.refresh = common.parse_list(args.refresh, int, "--refresh")[0]
        if args.refresh < 1 or args.refresh % args.ckpt_every:
            fail("--refresh", f"must be auto or a multiple of --ckpt_every ({args.ckpt_every}), "
                              f"got {args.refresh}")
    common.check_lr_seeds_betas(args)  # sets args.lrs, args.seed_list, args.beta_pair
    common.check_run_flags(args, eval_every_default=10)
    args.budget_list = sorted(set(common.parse_list(args.budgets, int, "--budgets")))
    if args.budget_list[0] < 1:
        fail("--budgets", f"budgets must be at least 1 step, got {args.budgets}")
    if args.mode in ("all", "two_shot") and args.T >= args.budget_list[0]:
        fail("--T", f"must be below the smallest budget ({args.budget_list[0]}), got {args.T}")
    args.device = str(common.pick_device(args.device))
    args.world = int(os.environ.get("WORLD_SIZE", "1"))
    args.micro_batch = max(1, min(args.micro_batch, args.batch // args.world))  # a process's share
    if args.workers > 1 and args.world > 1:
        fail("--workers", "student processes run without torchrun; use --workers 1 under torchrun")
    if args.batch % (args.world * args.micro_batch):
        fail("--micro_batch", f"--batch ({args.batch}) must be a multiple of processes x "
                              f"--micro_batch ({args.world} x {args.micro_batch})")
    if args.data is None and not os.path.exists(os.path.join(args.cache, "text", "manifest.json")):
        fail("--data", f"no corpus in {args.cache}/text; run `python data/prepare_lm_corpus.py "
                       f"--cache {args.cache}` (from the repository) first, or give --data")
    args.out = args.out or os.path.join("out", "lm_pretrain", f"{args.preset}-{args.mode}")
    if os.path.isfile(args.out):  # before the token cache is written
        fail("--out", f"{args.out} is a file, not a folder; choose another --out")
    if args.teacher_dir is not None:  # a teacher made on the same text and tokens, at the same size
        cfg = os.path.join(args.teacher_dir, "config.json")
        if not (os.path.exists(cfg) and common.saved_steps(teacher_ckpt(args.teacher_dir))):
            fail("--teacher_dir", f"{args.teacher_dir} holds no config.json and ckpt/teacher/")
        cfg = common.read_json(cfg)
        diff = [f"{k}={cfg.get(k)!r} (here {getattr(args, k)!r})" for k in TEACHER_KEYS
                if cfg.get(k) != getattr(args, k)]
        if diff:
            fail("--teacher_dir", f"{args.teacher_dir}'s settings differ: " + ", ".join(diff))
    if args.ckpt != "auto":
        steps = list(range(0, args.teacher_steps + 1, args.ckpt_every)) + [args.teacher_steps]
        steps = common.saved_steps(teacher_ckpt(args.teacher_dir)) if args.teacher_dir else steps
        if int(args.ckpt) not in steps:
            fail("--ckpt", f"{args.ckpt} is not a teacher checkpoint step")
    return args


def config_of(args):
    skip = {"resume", "halt_at", "lrs", "seed_list", "beta_pair", "budget_list", "world",
            "vocab_actual"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def setup(args):
    """Processes (torchrun), corpus, tokenizer and the fixed held-out sets: (rank, data)."""
    rank = 0
    torch.backends.cuda.matmul.allow_tf32 = True  # as parity.py: TF32 on Ampere+ (no-op on CPU)
    if args.world > 1:
        backend = "nccl" if args.device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
        if backend == "nccl":
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(args.device)
        rank = dist.get_rank()
    if rank == 0:  # rank 0 tokenizes and writes the cache, the others then read it
        streams, vocab, sources, tok_dir = load_data(args)
    barrier(args)
    if rank != 0:
        streams, vocab, sources, tok_dir = load_data(args)
    args.vocab_actual = len(vocab)
    eval_seqs, eval_src, probe_seqs, n_held = heldout_sets(args, streams)
    heldout = (*mask_batch(args, eval_seqs, 12345, 0), eval_src)  # the fixed masked held-out set
    masked = eval_src[heldout[1] != -100].long().bincount(minlength=len(sources)).tolist()
    eval_set = {"sequences": len(eval_seqs), "masked_tokens_by_source": dict(zip(sources, masked))}
    return rank, {"train": streams["train"], "sources": sources, "heldout": heldout,
                  "eval_set": eval_set, "probe": probe_seqs, "n_held": n_held, "vocab": vocab,
                  "tok_dir": tok_dir}


# --------------------------------------------------------------------------------------------------
# 8. Study: the n-gram probe (Sec. 4.2's definition, applied in Sec. 5, Fig. 5 middle), per teacher
# checkpoint: M_robust, the change at a masked word when its n-gram is masked too; M_close, when
# only that n-gram is kept.

@torch.no_grad()
def ngram_probe(model, ids, positions, windows, chunk=512):
    """pcfg.py's probe, every key visible, ids (N, L) clean: {window: {"robust"|"close": {"l1"|"tv":
    stats}, "count"}}; L1 = ||P(.|perturbed)[p] - P(.|p masked)[p]||_1 as the official code's."""
    model.eval()
    l1s = {name: {"robust": [], "close": []} for name in windows}
    for p in positions:
        base = ids.clone()
        base[:, p] = MASK
        variants = [base]
        for left, right in windows.values():
            lo, hi = max(0, p - left), min(ids.shape[1], p + right + 1)
            robust, close = base.clone(), base.clone()
            robust[:, lo:hi] = MASK
            close[:, :lo], close[:, hi:] = MASK, MASK
            variants += [robust, close]
        allx = torch.cat(variants)
        probs = torch.cat([torch.softmax(model(allx[i:i + chunk])[:, p].float(), -1)
                           for i in range(0, len(allx), chunk)]).view(len(variants), len(ids), -1)
        for v, (name, kind) in enumerate(itertools.product(windows, ("robust", "close"))):
            l1s[name][kind].append((probs[1 + v] - probs[0]).abs().sum(-1))  # variant 1 + v
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
    positions = list(range(args.probe_stride, args.seq_len - 2, args.probe_stride))
    positions = positions or [args.seq_len // 2]
    model, run, out = make_model(args, "teacher", 0), args.teacher_dir or args.out, []
    for step in common.saved_steps(teacher_ckpt(run)):
        model.load_state_dict(load_teacher(run, step, args.device)["model"])
        out.append({"step": step, "windows": ngram_probe(model, ids, positions, WINDOWS)})
    return out


def probe_series(probe, window="3-gram", kind="robust", stat="median"):
    """One number per checkpoint: e.g. the median (over sequences and positions) of M_robust, L1."""
    return [p["windows"][window][kind]["l1"][stat] for p in probe]


def mrobust_peak_step(probe):
    """The median 3-gram M_robust's maximum over trained checkpoints (step 0 is no curriculum)."""
    trained = [p for p in probe if p["step"] > 0]
    series = probe_series(trained)
    return trained[series.index(max(series))]["step"]


# --------------------------------------------------------------------------------------------------
# 9. Study: table, the claims' checks, the figure (Fig. 5: loss phases, 3-gram M_robust, students).

def print_table(results, args):
    st = results.get("students", {})
    cell = lambda c: "%.4f ± %.4f (lr %g)" % (*common.mean_std([r["acc"] for r in c]), c[0]["lr"])
    if st:
        rows = []
        for b in args.budget_list:
            cells = [[r for r in st.get(m, []) if r["budget"] == b] for m in METHODS]
            rows.append([b] + [cell(c) if c else "-" for c in cells])
        print(f"\nmasked-token accuracy on held-out text (mean ± std over seeds {args.seeds})\n"
              + common.format_table(["budget"] + METHODS, rows))


def claim_checks(results, args):
    """The checks of Sec. 5's three claims on this run (the students: at the smallest budget)."""
    st, ph, probe = results.get("students", {}), results.get("phases", {}), results.get("probe")
    b, checks = args.budget_list[0], {}
    at = lambda m: [r["acc"] for r in sorted(st[m], key=lambda r: r["seed"]) if r["budget"] == b]
    gap = lambda m, other: common.mean_std(at(m))[0] - common.mean_std(at(other))[0]
    if "slopes" in ph:  # (1) pcfg.py's check on the same numbers: mean loss change per step
        sl, last_steps = ph["slopes"], results["teacher"]["steps"][-2:]
        checks["drop_nats"] = -sl["drop"] * (ph["drop_end"] - ph["drop_start"])
        # a plateau and a decay each under a third of the drop's rate, two checkpoints past the drop
        checks["three_phases"] = bool(sl["drop"] < 0 and abs(sl["plateau"]) < abs(sl["drop"]) / 3
                                      and ph["drop_end"] < last_steps[0] and sl["decay"] < 0
                                      and abs(sl["decay"]) < abs(sl["drop"]) / 3)
    if probe and "drop_start" in ph:  # (2) the median 3-gram M_robust peaks in the drop, then falls
        steps, series = [p["step"] for p in probe], probe_series(probe)
        peak = steps.index(mrobust_peak_step(probe))
        lo, hi = steps.index(ph["drop_start"]) - 1, steps.index(ph["drop_end"]) + 1
        checks["mrobust_peak_in_drop"] = lo <= peak <= hi
        checks["mrobust_peak_over_final"] = series[peak] / max(series[-1], 1e-12)
        # a real peak: >= 0.01 (L1; Fig. 5 middle: 0.25 at the peak, 2e-3 to 6e-3 once moved on)
        checks["mrobust_falls_3x"] = series[peak] >= 0.01 and checks["mrobust_peak_over_final"] >= 3
    for other in [m for m in ("ce", "oneshot") if m in st and "progressive" in st]:  # (3) Fig. 5
        checks[f"progressive_minus_{other}_smallest_budget"] = gap("progressive", other)
        checks[f"progressive_beats_{other}_by_2pts"] = gap("progressive", other) >= 0.02
        pairs = zip(at("progressive"), at(other))
        checks[f"progressive_beats_{other}_every_seed"] = all(p > o for p, o in pairs)
    return checks


def make_figures(results, args):
    plt = common.plt()
    t, probe, st = results.get("teacher"), results.get("probe"), results.get("students", {})
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4), layout="tight")
    ph = results.get("phases", {})
    for ax in (left, middle) if "inflection" in ph else ():  # no phases: fewer than 6 checkpoints
        ax.axvline(ph["inflection"], color="tab:red", ls="--", lw=1, label="inflection")
        ax.axvspan(ph["drop_start"], ph["drop_end"], color="tab:red", alpha=0.1, label="drop")
    if t:
        left.plot(t["steps"][1:], t["val_loss"][1:], "k.-", ms=3, label="validation")
        left.set(xscale="log", xlabel="teacher steps", ylabel="validation MLM loss",
                 title="teacher's loss")
        left.legend(fontsize=8)
    if probe:
        steps = [p["step"] for p in probe]
        middle.plot(steps[1:], probe_series(probe)[1:], "o-", color="tab:purple", ms=3)
        middle.set(xscale="log", yscale="log", xlabel="teacher steps",
                   ylabel="median M_robust (L1)", title="M_robust for 3-grams")
    for m in [m for m in METHODS if m in st]:
        means = [common.mean_std([r["acc"] for r in st[m] if r["budget"] == b])
                 for b in args.budget_list]
        right.errorbar(args.budget_list, [a for a, _ in means], yerr=[s for _, s in means],
                       fmt="o-", capsize=3, label=m, color=f"C{METHODS.index(m)}")
    if st:
        right.set(xscale="log", xlabel="student steps (budget)", ylabel="masked-token accuracy",
                  title="students")
        right.legend(fontsize=8)
    else:
        right.axis("off")  # --mode teacher or probe
    fig.savefig(os.path.join(args.out, "fig5_real_data.png"), dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# 10. Main: corpus -> tokenizer -> teacher -> probe -> students -> results.

def main(argv=None):
    args = parse_args(argv)
    rank, data = setup(args)
    if rank == 0:
        common.prepare_run_dir(args.out, config_of(args), args.resume,  # workers: the same numbers
                               ignore=("resume", "device", "out", "workers"))
        shutil.copy(os.path.join(data["tok_dir"], "tokenizer.json"), args.out)
        print(f"data: {data['train'].numel()} training tokens, {data['n_held']} held-out sequences"
              f", {len(data['vocab'])} token types, processes {args.world}", flush=True)
    barrier(args)
    results, t_start = {"config": config_of(args), "eval_set": data["eval_set"]}, time.time()
    if args.mode != "ce":
        if args.teacher_dir is None:
            train_teacher(args, data, rank)
        t = results["teacher"] = teacher_curve(args)
        results["phases"] = loss_phases(t["steps"], t["val_loss"]) or {}
        # C1 (--refresh and --ckpt auto); too few checkpoints for phases: the middle one (pcfg.py)
        c1 = results["phases"].get("inflection", t["steps"][len(t["steps"]) // 2])
        if args.refresh == "auto":  # progressive's first checkpoint is C1 (Sec. 5: 8k steps)
            args.refresh = results["refresh"] = c1
    if args.mode in ("all", "probe"):
        probe_path = os.path.join(args.out, "probe.json")
        if rank == 0 and not (args.resume and os.path.exists(probe_path)):
            common.write_json(run_probe(args, data["probe"]), probe_path)
        barrier(args)
        results["probe"] = common.read_json(probe_path)
        results["phases"]["m_robust_peak_step"] = mrobust_peak_step(results["probe"])
    methods = METHODS if args.mode == "all" else [m for m in METHODS if m == args.mode]
    if "two_shot" in methods:  # stage 1: --ckpt, or C1, the loss inflection (Sec. 5)
        results["two_shot_ckpt"] = c1 if args.ckpt == "auto" else int(args.ckpt)
    if methods:
        stage1 = results.get("two_shot_ckpt")
        results["students"], results["lr_search"] = run_students(args, methods, data, stage1, rank)
    results["checks"], results["measured"] = common.split_checks(claim_checks(results, args))
    if rank == 0:
        common.write_json(results, os.path.join(args.out, "results.json"))
        print_table(results, args)
        print("\nchecks:", results["checks"])
        make_figures(results, args)
        print(f"\nwrote results.json and figures to {args.out}/ in {time.time() - t_start:.0f}s")
    if args.world > 1:
        dist.destroy_process_group()
    return results


if __name__ == "__main__":
    main()
