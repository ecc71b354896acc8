"""(n, k)-sparse parity: progressive distillation against one-shot distillation and CE (paper Sec. 3).

A wide teacher learns sparse parity through a phase transition. A narrow student learns it far faster from the
teacher's intermediate checkpoints (progressive distillation) than from the final teacher (one-shot) or from labels
(CE): checkpoints inside the transition correlate with low-degree monomials of the support, an implicit curriculum.
For an MLP or a small GPT-style Transformer this regenerates Fig. 1 left / middle and Fig. 3 (docs/parity_sweep.py:
Fig. 2). All students of a run (methods x lrs x seeds) train as one stacked model: one kernel launch per layer and step.
--mode extract adds curriculum extraction (Gupta & Karmalkar 2025, arXiv 2503.17494), a curriculum drawn from the
final teacher alone: a random projection of its hidden representation first, then its outputs (Extraction, section 5).

    python parity.py                                  # the whole CPU MLP study
    python parity.py --arch transformer               # the same with Transformers
    python parity.py --preset paper --device cuda     # the paper's settings (GPU)
    python parity.py --mode progressive --lr 5e-3 --teacher_dir out/parity/cpu-mlp-all

To copy: this file plus common.py; needs torch and matplotlib.
"""
import argparse
import itertools
import math
import os
import random
import sys
import time
from functools import lru_cache, partial

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # before torch: same seed, same numbers on CPU
import common
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import fail

# ----------------------------------------------------------------------------------------------------
# 0. Config: presets (a flag given on the command line overrides them), flags, and their checks.

PAPER_GRID = "1e-2,7.5e-3,5e-3,2.5e-3,1e-3"
CONSTANT_LR = dict(teacher_schedule="constant", teacher_warmup=0.0, teacher_floor=0.0,
                   schedule="constant", warmup=0.0, floor=0.0)  # the cpu and smoke presets
PRESETS = {  # extract_steps: 500 measured on the cpu MLP (Extraction); paper, cpu Transformer: T / 10, unmeasured
    ("paper", "mlp"): dict(  # the paper's settings (Sec. 3, Fig. 1; the official code), for a GPU
        n=100, k=6, teacher_width=50_000, student_width=100, teacher_optim="sgd", teacher_lr=0.01, teacher_batch=1,
        teacher_steps=20_000_000, teacher_schedule="cosine", teacher_warmup=0.0, teacher_floor=0.1, optim="sgd",
        lr_grid="1e-2,5e-3,1e-3", batch=1, steps=20_000_000, schedule="cosine", warmup=0.0, floor=0.1, T=1_000_000,
        ckpt_every=100_000, eval_every=20_000, extract_steps=100_000, temperature=1e-20, betas="0.9,0.999"),
    ("paper", "transformer"): dict(
        n=100, k=6, layers=2, head_dim=8, teacher_heads=32, student_heads=4, dropout=0.1, teacher_optim="adam",
        teacher_lr=3e-4, teacher_batch=32, teacher_steps=250_000, teacher_schedule="cosine", teacher_warmup=0.06,
        teacher_floor=0.0, optim="adam", lr_grid="1e-4", batch=32, steps=250_000, schedule="cosine", warmup=0.06,
        floor=0.0, ckpt_every=3125, eval_every=625, T=31_250, extract_steps=3125, temperature=1.0, betas="0.9,0.999"),
    ("cpu", "mlp"): dict(  # measured to show the claim on 2 CPU cores in minutes (docs/parity.md, "Presets")
        n=50, k=5, teacher_width=2000, student_width=20, teacher_optim="adam", teacher_lr=1e-3, teacher_batch=32,
        teacher_steps=10_000, optim="adam", lr_grid=PAPER_GRID, batch=32, steps=30_000, **CONSTANT_LR,
        ckpt_every=100, eval_every=100, T=5_000, extract_steps=500, temperature=1e-20),
    ("cpu", "transformer"): dict(  # tuned on seeds 0-5, confirmed on unseen seeds (docs/parity.md). Width-6 student:
        n=20, k=3, layers=2, head_dim=8, teacher_heads=16, student_heads=1, student_head_dim=6, teacher_optim="adam",
        teacher_lr=1e-2, teacher_batch=32, teacher_steps=800, optim="adam", lr_grid="1.25e-3", batch=32, steps=5_000,
        **CONSTANT_LR, ckpt_every=50, eval_every=50, T=1_000, ckpt="150", extract_steps=100, temperature=1.0,
        speed=0.125, probe_samples=20_000),  # at 1.25e-3 labels fail; at speed 1 it cannot follow the transition
    ("smoke", "mlp"): dict(  # seconds, for tests
        n=12, k=3, teacher_width=256, student_width=16, teacher_optim="adam", teacher_lr=3e-3, teacher_batch=32,
        teacher_steps=400, optim="adam", lr_grid="1e-2,3e-3", batch=32, steps=400, **CONSTANT_LR, extract_steps=50,
        ckpt_every=50, eval_every=50, T=100, temperature=1e-20, probe_samples=20_000, probe_off=20, eval_size=1024),
    ("smoke", "transformer"): dict(
        n=8, k=2, layers=1, head_dim=4, teacher_heads=4, student_heads=1, teacher_optim="adam", teacher_lr=3e-3,
        teacher_batch=16, teacher_steps=60, optim="adam", lr_grid="3e-3", batch=16, **CONSTANT_LR, T=20, ckpt_every=20,
        steps=60, eval_every=20, extract_steps=20, temperature=1e-20, probe_samples=4_000, probe_off=10, eval_size=512),
}
MODES = ["all", "teacher", "probe", "ce", "oneshot", "progressive", "two_shot", "extract"]
THRESHOLDS = (0.9, 0.95)
STATS_SAMPLES = 8192  # fresh samples for the standardisation statistics of extract's targets (Extraction)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mode", default="all", choices=MODES, help="what to run (see the module docstring)")
    p.add_argument("--arch", default="mlp", choices=["mlp", "transformer"], help="model family (Sec. 3.1)")
    p.add_argument("--preset", default="cpu", choices=["cpu", "paper", "smoke"], help="defaults for all flags below")
    a = p.add_argument_group("task").add_argument
    a("--n", type=int, help="input dimension n of (n,k)-sparse parity")
    a("--k", type=int, help="support size k")
    a("--random_support", type=int, default=0, choices=[0, 1], help="1: draw the support from --teacher_seed")
    a = p.add_argument_group("models").add_argument
    a("--teacher_width", type=int, help="MLP teacher hidden width")
    a("--student_width", type=int, help="MLP student hidden width")
    a("--layers", type=int, help="Transformer layers")
    a("--head_dim", type=int, help="Transformer head dimension")
    a("--teacher_heads", type=int, help="Transformer teacher heads (width = heads x head_dim)")
    a("--student_heads", type=int, help="Transformer student heads")
    a("--student_head_dim", type=int, help="Transformer student head dimension (default: --head_dim)")
    a("--dropout", type=float, default=0.0, help="Transformer dropout (GPT-2 default 0.1)")
    a = p.add_argument_group("teacher").add_argument
    a("--teacher_optim", choices=["sgd", "adam"], help="teacher optimizer (no momentum, no weight decay)")
    a("--teacher_lr", type=float, help="teacher learning rate")
    a("--teacher_batch", type=int, help="teacher batch size (fresh samples every step)")
    a("--teacher_steps", type=int, help="teacher optimizer steps")
    a("--teacher_schedule", choices=["constant", "cosine"], help="teacher lr schedule")
    a("--teacher_warmup", type=float, help="teacher linear warmup, fraction of its optimizer steps")
    a("--teacher_floor", type=float, help="cosine decays to floor x lr")
    a("--teacher_seed", type=int, default=0, help="teacher init and data seed")
    a("--ckpt_every", type=int, help="teacher checkpoint interval (steps)")
    a("--teacher_dir", type=str, default=None, help="reuse the teacher of an earlier run (its --out folder)")
    a = p.add_argument_group("students").add_argument
    a("--optim", choices=["sgd", "adam"], help="student optimizer")
    a("--lr", type=float, default=None, help="one student learning rate (replaces --lr_grid)")
    a("--lr_grid", type=str, help="student learning rates; each method is reported at its best one")
    a("--batch", type=int, help="student batch size")
    a("--steps", type=int, help="student optimizer steps")
    a("--schedule", choices=["constant", "cosine"], help="student lr schedule")
    a("--warmup", type=float, help="student linear warmup, fraction of its optimizer steps")
    a("--floor", type=float, help="cosine decays to floor x lr")
    a("--betas", type=str, default="0.9,0.95", help="Adam betas (the paper preset: torch's, as the official code)")
    a("--seeds", type=str, default="0,1,2", help="student seeds (the paper averages 3)")
    a = p.add_argument_group("distillation").add_argument
    a("--temperature", type=float, help="teacher softmax temperature; 1e-20 = argmax targets")
    a("--speed", type=float, default=1.0, help="progressive: student step t uses the first checkpoint >= t x speed")
    a("--ckpt", type=str, default="auto", help="two_shot stage-1 checkpoint step, or auto (picked by the probe)")
    a("--T", type=int, help="two_shot: student steps on the stage-1 checkpoint before switching to the final one")
    a("--extract_steps", type=int, help="extract: student steps on the teacher's hidden representation, then outputs")
    a = p.add_argument_group("probe").add_argument
    a("--probe_samples", type=int, default=100_000, help="fresh samples for the monomial probe")
    a("--probe_off", type=int, default=100, help="random off-support monomials per degree")
    a = p.add_argument_group("run").add_argument
    a("--eval_every", type=int, help="evaluation interval (steps); divides --ckpt_every")
    a("--eval_size", type=int, default=4096, help="held-out examples (paper: 4096)")
    a("--out", type=str, default=None, help="run folder (default out/parity/<preset>-<arch>-<mode>)")
    a("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    a("--save_every", type=int, default=None, help="student resume-checkpoint interval (default: 20 evals)")
    a("--device", type=str, default="auto", help="auto, cpu, cuda, cuda:N or mps")
    a("--cuda_graph", type=int, default=1, choices=[0, 1], help="replay each train step as a CUDA graph (cuda only)")
    a("--halt_at", type=str, default=None, help=argparse.SUPPRESS)  # tests: "teacher:N" or "students:N"
    return p


def parse_args(argv=None):
    args = common.parse_with_presets(build_parser(), lambda f: PRESETS[(f.preset, f.arch)], argv)
    validate(args)
    return args


def validate(args):
    """Every check that can fail runs before anything is written (exit 2, naming the flag)."""
    common.check_finite_flags(args)  # nan or inf in any float flag: first
    args.student_head_dim = args.student_head_dim or args.head_dim  # Transformer only (None for the MLP)
    sizes = ["teacher_width", "student_width"] if args.arch == "mlp" else [
        "layers", "head_dim", "teacher_heads", "student_heads", "student_head_dim"]
    common.check_positive(args, ["n", "k", "teacher_batch", "teacher_steps", "batch", "steps", "ckpt_every",
                                 "eval_every", "eval_size", "probe_samples", "teacher_lr",
                                 "temperature", "speed"] + sizes)
    common.check_range(args, {"k": f"[1, {args.n}]", "dropout": "[0, 1)"} | {  # --T, --extract_steps: where used
        f: f"[0, {args.steps}]" for f, m in (("T", "two_shot"), ("extract_steps", "extract")) if args.mode in ("all", m)})
    if args.ckpt_every % args.eval_every:
        fail("--eval_every", f"must divide --ckpt_every ({args.ckpt_every}), got {args.eval_every}")
    common.check_lr_seeds_betas(args)  # sets args.lrs, args.seed_list, args.beta_pair
    common.check_run_flags(args, eval_every_default=20)
    args.device = str(common.pick_device(args.device))
    args.out = args.out or os.path.join("out", "parity", f"{args.preset}-{args.arch}-{args.mode}")
    args.support = (sorted(random.Random(args.teacher_seed).sample(range(args.n), args.k)) if args.random_support
                    else list(range(args.k)))  # the paper's: the first k; --random_support 1 draws them from the seed
    if args.teacher_dir is not None:
        check_teacher_dir(args)
    elif args.ckpt != "auto" and (int(args.ckpt) % args.ckpt_every or int(args.ckpt) > args.teacher_steps):
        fail("--ckpt", f"{args.ckpt} is not a saved step (a multiple of --ckpt_every, at most --teacher_steps)")


def check_teacher_dir(args):
    """--teacher_dir must hold a finished teacher for the same task and architecture."""
    d, saved = args.teacher_dir, common.saved_steps(teacher_ckpt(args.teacher_dir))
    if not os.path.exists(os.path.join(d, "config.json")) or not saved:
        fail("--teacher_dir", f"{d} holds no teacher checkpoints (expected config.json and ckpt/teacher/)")
    cfg = common.read_json(os.path.join(d, "config.json"))
    keys = ["arch", "n", "k", "support"] + (["teacher_width"] if args.arch == "mlp" else
                                            ["layers", "head_dim", "teacher_heads"])
    diff = [f"{k}={cfg.get(k)!r} (here {getattr(args, k)!r})" for k in keys if cfg.get(k) != getattr(args, k)]
    if diff:
        fail("--teacher_dir", f"{d} was made for another setting: " + ", ".join(diff))
    if cfg.get("teacher_steps") not in saved:
        fail("--teacher_dir", f"the teacher in {d} is unfinished (no checkpoint at its step "
                              f"{cfg.get('teacher_steps')}); finish it with --resume first")
    if args.ckpt != "auto" and int(args.ckpt) not in saved:
        fail("--ckpt", f"{args.ckpt} is not a checkpoint in {d}")


# ----------------------------------------------------------------------------------------------------
# 1. Data: (n, k)-sparse parity (Sec. 3, Def. 3.1). x ~ Unif{-1,+1}^n, y = prod_{i in S} x_i.
# As in the paper's code, class 0 <=> parity +1 and class 1 <=> parity -1.

def parity_labels(x, support):
    return (x[..., support].prod(-1) < 0).long()


def sample(gen, shape, n, support):
    """Fresh samples on the generator's device: x of shape (*shape, n) in {-1,+1}, labels of `shape`."""
    x = torch.randint(0, 2, (*shape, n), generator=gen, device=gen.device).float().mul_(2).sub_(1)
    return x, parity_labels(x, support)


def generator(device, seed, stream):
    """Independent random streams: 1 teacher data, 2 student data, 3 held-out set, 4 probe, 5 extract's statistics."""
    return torch.Generator(device=device).manual_seed(1000 * seed + stream)


# ----------------------------------------------------------------------------------------------------
# 2. Models. Each holds S independent models as stacked weights (leading dim S), so a batch of
# students (or of teacher checkpoints) runs as one batched matmul per layer. Input x: (S, B, n).

def blinear(x, w, b=None):
    """(S, ..., i) @ (S, i, o) + (S, o) for every stacked model at once."""
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    out = torch.bmm(flat, w) if b is None else torch.baddbmm(b.unsqueeze(1), flat, w)
    return out.view(*x.shape[:-1], w.shape[-1])


class MLP(nn.Module):
    """One-hidden-layer ReLU MLP, n -> width -> 2 (Sec. 3.1; PyTorch's default uniform init)."""

    def __init__(self, S, n, width):
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.empty(S, n, width)), nn.Parameter(torch.empty(S, width))
        self.w2, self.b2 = nn.Parameter(torch.empty(S, width, 2)), nn.Parameter(torch.empty(S, 2))

    @torch.no_grad()
    def reset(self, gens):
        for s, g in enumerate(gens):  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            for w, b in [(self.w1, self.b1), (self.w2, self.b2)]:
                bound = 1 / math.sqrt(w.shape[1])
                for p in (w, b):
                    p[s].copy_(torch.rand(p[s].shape, generator=g).mul_(2 * bound).sub_(bound))

    def forward(self, x, hidden=False):  # hidden: also return [the post-ReLU hidden layer] (for extract)
        h = torch.relu(blinear(x, self.w1, self.b1))
        out = blinear(h, self.w2, self.b2)
        return (out, [h]) if hidden else out


class LayerNorm(nn.Module):
    def __init__(self, S, d):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(S, d)), nn.Parameter(torch.zeros(S, d))

    def forward(self, x):  # x: (S, B, T, d)
        return F.layer_norm(x, x.shape[-1:]) * self.weight[:, None, None] + self.bias[:, None, None]


class Block(nn.Module):
    """GPT-2 block: pre-LN causal self-attention and a GELU MLP of width 4d."""

    def __init__(self, S, heads, head_dim, dropout):
        super().__init__()
        d, self.heads, self.dropout = heads * head_dim, heads, dropout
        self.ln1, self.ln2 = LayerNorm(S, d), LayerNorm(S, d)
        self.attn_w, self.attn_b = nn.Parameter(torch.empty(S, d, 3 * d)), nn.Parameter(torch.zeros(S, 3 * d))
        self.proj_w, self.proj_b = nn.Parameter(torch.empty(S, d, d)), nn.Parameter(torch.zeros(S, d))
        self.fc_w, self.fc_b = nn.Parameter(torch.empty(S, d, 4 * d)), nn.Parameter(torch.zeros(S, 4 * d))
        self.out_w, self.out_b = nn.Parameter(torch.empty(S, 4 * d, d)), nn.Parameter(torch.zeros(S, d))

    def forward(self, h, last_only=False):
        """last_only: compute the output at the last position only (all the classifier reads)."""
        S, B, T, d = h.shape
        q, k, v = blinear(self.ln1(h), self.attn_w, self.attn_b).split(d, dim=-1)
        if last_only:  # the last query sees every key, so no mask is needed
            q, h = q[:, :, -1:], h[:, :, -1:]
        q, k, v = (t.reshape(S * B, t.shape[2], self.heads, -1).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, is_causal=not last_only, dropout_p=p)
        a = a.transpose(1, 2).reshape(h.shape)
        h = h + F.dropout(blinear(a, self.proj_w, self.proj_b), p, self.training)
        m = blinear(F.gelu(blinear(self.ln2(h), self.fc_w, self.fc_b)), self.out_w, self.out_b)
        return h + F.dropout(m, p, self.training)


class GPT(nn.Module):
    """GPT-2-style Transformer on tokens (1 - x) / 2 in {0, 1}; the class is read from the logits at
    the last position, as the paper's code reads HF GPT-2's LM head (Sec. 3.1)."""

    def __init__(self, S, n, layers, heads, head_dim, dropout):
        super().__init__()
        d, self.dropout = heads * head_dim, dropout
        self.wte, self.wpe = nn.Parameter(torch.empty(S, 2, d)), nn.Parameter(torch.empty(S, n, d))
        self.blocks = nn.ModuleList(Block(S, heads, head_dim, dropout) for _ in range(layers))
        self.ln_f, self.head = LayerNorm(S, d), nn.Parameter(torch.empty(S, d, 2))

    @torch.no_grad()
    def reset(self, gens):
        """GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 x layers), zero biases."""
        big = [self.wte, self.wpe, self.head] + [b.attn_w for b in self.blocks] + [b.fc_w for b in self.blocks]
        res = [b.proj_w for b in self.blocks] + [b.out_w for b in self.blocks]
        for s, g in enumerate(gens):
            for ps, std in [(big, 0.02), (res, 0.02 / math.sqrt(2 * len(self.blocks)))]:
                for p in ps:
                    p[s].copy_(torch.randn(p[s].shape, generator=g) * std)

    def forward(self, x, hidden=False):  # hidden: also return each block's output (the last block's: last position)
        tokens = F.one_hot(((1 - x) / 2).long(), 2).to(self.wte.dtype)  # (S, B, n, 2)
        h = torch.einsum("sbtv,svd->sbtd", tokens, self.wte) + self.wpe[:, None]
        h, hs = F.dropout(h, self.dropout, self.training), []
        for i, block in enumerate(self.blocks):
            h = block(h, last_only=i == len(self.blocks) - 1)
            hs.append(h)
        out = blinear(self.ln_f(h), self.head)[:, :, 0]
        return (out, hs) if hidden else out


def make_model(args, role, S, seeds=None):
    """role 'teacher' or 'student'; `seeds` (len S) initialise each stacked model independently."""
    if args.arch == "mlp":
        model = MLP(S, args.n, args.teacher_width if role == "teacher" else args.student_width)
    else:
        heads, head_dim = ((args.teacher_heads, args.head_dim) if role == "teacher" else
                           (args.student_heads, args.student_head_dim))
        model = GPT(S, args.n, args.layers, heads, head_dim, args.dropout)
    if seeds is not None:
        model.reset([torch.Generator().manual_seed(1000 * s + (0 if role == "teacher" else 5)) for s in seeds])
    return model.to(args.device)


def load_into(model, slot, state):
    """Copy a single-model checkpoint (S = 1) into stacked model `slot`."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p[slot].copy_(state[name][0])


@torch.no_grad()
def evaluate(model, x, y, chunk=2048):
    """Accuracy and CE loss of every stacked model on a held-out set x (N, n)."""
    was_training = model.training
    model.eval()
    S, correct, loss = next(model.parameters()).shape[0], 0, 0
    for i in range(0, len(x), chunk):
        logits = model(x[i:i + chunk].expand(S, -1, -1)).float()
        yy = y[i:i + chunk].expand(S, -1)
        correct = correct + (logits.argmax(-1) == yy).sum(-1)
        loss = loss + F.cross_entropy(logits.transpose(1, 2), yy, reduction="none").sum(-1)
    model.train(was_training)
    return (correct / len(x)).cpu().tolist(), (loss / len(x)).cpu().tolist()


# ----------------------------------------------------------------------------------------------------
# 3. Training: SGD or Adam with one learning rate per stacked model (the lr grid runs in one batch; no weight
# decay, no momentum, as in the paper), and the step loop that teacher and students share. State lives in
# tensors, so a whole train step can be captured as a CUDA graph.

class Optimizer:
    def __init__(self, params, kind, lrs, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.kind, self.betas, self.eps = list(params), kind, betas, eps
        self.lr = torch.tensor(lrs, dtype=torch.float32, device=self.params[0].device)
        self.factor = torch.ones((), device=self.lr.device)  # schedule multiplier, set before each step
        self.t = torch.zeros((), device=self.lr.device)
        self.m, self.v = [[torch.zeros_like(p) for p in self.params] if kind == "adam" else [] for _ in range(2)]

    @torch.no_grad()
    def step(self):
        self.t += 1
        b1, b2 = self.betas
        for i, p in enumerate(self.params):
            lr = (self.lr * self.factor).view(-1, *[1] * (p.dim() - 1))
            if self.kind == "sgd":
                p.sub_(lr * p.grad)
            else:  # torch.optim.Adam's update, written out
                self.m[i].lerp_(p.grad, 1 - b1)
                self.v[i].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (self.v[i] / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
                p.sub_(lr * self.m[i] / (1 - b1 ** self.t) / denom)
            p.grad = None  # zero_grad: the next backward starts afresh

    def tensors(self):  # the whole state: saved for --resume, restored after a CUDA graph's warm-up
        return [self.t] + self.m + self.v


def compile_step(step, state_tensors, args):
    """On CUDA, capture one train step as a CUDA graph and return its replay: batch-1 SGD at width 50k is otherwise
    bound by kernel launches. Warm-up steps (on a side stream) are undone, so results do not depend on the capture."""
    if not (args.cuda_graph and args.device.startswith("cuda")):
        return step
    backup = [t.detach().clone() for t in state_tensors]
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(graph := torch.cuda.CUDAGraph()):
            step()
        run = graph.replay
    except RuntimeError as e:  # an op that cannot be captured: stay correct, just slower
        print(f"warning: CUDA graph capture failed ({e}); running eagerly (--cuda_graph 0)", file=sys.stderr)
        torch.cuda.synchronize()
        run = step
    with torch.no_grad():
        for t, b in zip(state_tensors, backup):
            t.copy_(b)
    return run


def train_blocks(args, phase, start, total, sched, opt, gens, batch, make_step, refresh=None):
    """Run optimizer steps start..total of make_step(x_buf, y_buf, loss_sum) (a CUDA graph where it can) on fresh
    samples (row j of the batch from stream gens[j]); yield (step, mean train loss per model) every --eval_every
    steps. A block's samples are drawn at once, on the device, and metrics are read only at the yields."""
    x_buf = torch.zeros(len(gens), batch, args.n, device=args.device)  # static: a captured step reads these
    y_buf = torch.zeros(len(gens), batch, dtype=torch.long, device=args.device)
    loss_sum = torch.zeros(len(opt.lr), device=args.device)
    run_step = compile_step(make_step(x_buf, y_buf, loss_sum), opt.params + opt.tensors() + [loss_sum], args)
    for s0 in range(start, total, args.eval_every):
        n_steps = min(args.eval_every, total - s0)
        xs, ys = map(torch.stack, zip(*[sample(g, (n_steps, batch), args.n, args.support) for g in gens]))
        loss_sum.zero_()
        for i in range(n_steps):
            if refresh is not None:
                refresh(s0 + i)
            opt.factor.fill_(common.lr_factor(s0 + i, total, *sched))
            x_buf.copy_(xs[:, i])
            y_buf.copy_(ys[:, i])
            run_step()
            if args.halt_at == f"{phase}:{s0 + i + 1}":  # tests: die as a killed job would; --resume must end the same
                print(f"halting at {phase} step {s0 + i + 1} (--halt_at)", flush=True)
                os._exit(1)
        losses = (loss_sum / n_steps).cpu().tolist()
        common.check_finite(sum(losses), f"the {phase} training loss at step {s0 + n_steps}")
        yield s0 + n_steps, losses


def save_state(path, step, model, opt, gens, **extra):
    common.save_checkpoint({"model": model.state_dict(), "opt": opt.tensors(), "step": step,
                            "gens": [g.get_state() for g in gens], **extra}, path)


def load_state(args, path, phase, model, opt, gens):
    """--resume: restore model, optimizer and data streams from `path` if it exists, and drop the metrics that a
    killed run logged after that checkpoint. Returns the saved state ({"step": 0} if there is none)."""
    state = {"step": 0}
    if os.path.exists(path):
        state = common.load_checkpoint(path, args.device)
        model.load_state_dict(state["model"])
        for mine, saved in zip(opt.tensors(), state["opt"]):
            mine.copy_(saved)
        for g, saved in zip(gens, state["gens"]):
            g.set_state(saved.cpu())
        print(f"{phase}: resuming at step {state['step']}")
    metrics = os.path.join(args.out, "metrics.jsonl")
    common.rewrite_jsonl(metrics, [r for r in common.read_jsonl(metrics)
                                   if r["phase"] != phase or r["step"] <= state["step"]])
    return state


# ----------------------------------------------------------------------------------------------------
# 4. Teacher training: a wide model on labels, checkpointed every --ckpt_every steps (step 0 included), which the
# students (sections 5-6) and the probe (section 7) read, here or via --teacher_dir.

def teacher_ckpt(run_dir, step=None):  # a run's teacher checkpoint at `step`, or the folder that holds them
    folder = os.path.join(run_dir, "ckpt", "teacher")
    return folder if step is None else os.path.join(folder, f"step_{step:09d}.pt")


@lru_cache(maxsize=8)
def load_teacher(run_dir, step, device):
    return common.load_checkpoint(teacher_ckpt(run_dir, step), device)


def teacher_step(model, opt, x_buf, y_buf, loss_sum):
    """One optimizer step of the teacher(s) on labels, reading the batch from x_buf, y_buf (S, B, ...)."""
    def step():
        loss = F.cross_entropy(model(x_buf).flatten(0, 1), y_buf.flatten(), reduction="none")
        loss = loss.view(y_buf.shape).mean(-1)  # (S,): one mean loss per stacked teacher
        loss.sum().backward()
        opt.step()
        loss_sum.add_(loss.detach())
    return step


def train_teacher(args, heldout):
    state_path, metrics = os.path.join(args.out, "ckpt", "teacher_state.pt"), os.path.join(args.out, "metrics.jsonl")
    model = make_model(args, "teacher", 1, seeds=[args.teacher_seed])
    opt = Optimizer(model.parameters(), args.teacher_optim, [args.teacher_lr], args.beta_pair)
    gens = [generator(args.device, args.teacher_seed, 1)]
    start = load_state(args, state_path, "teacher", model, opt, gens)["step"]
    if start >= args.teacher_steps:
        return
    sched, t0 = (args.teacher_schedule, args.teacher_warmup, args.teacher_floor), time.time()
    blocks = train_blocks(args, "teacher", start, args.teacher_steps, sched, opt, gens, args.teacher_batch,
                          partial(teacher_step, model, opt))
    for step_no, losses in itertools.chain([(0, None)] if start == 0 else [], blocks):  # step 0: the init, untrained
        acc, loss = evaluate(model, *heldout)
        train = {"train_loss": losses[0]} if losses else {}
        common.append_jsonl(metrics, {"phase": "teacher", "step": step_no, "acc": acc[0], "loss": loss[0], **train})
        if step_no % args.ckpt_every == 0 or step_no == args.teacher_steps:
            common.save_checkpoint({"model": model.state_dict(), "step": step_no, "acc": acc[0]},
                                   teacher_ckpt(args.out, step_no))
            save_state(state_path, step_no, model, opt, gens)
        if losses and (step_no % (10 * args.eval_every) == 0 or step_no == args.teacher_steps):
            print(f"teacher step {step_no:>9d}  acc {acc[0]:.3f}  train loss {losses[0]:.4f}  "
                  f"({time.time() - t0:.0f}s)", flush=True)


# ----------------------------------------------------------------------------------------------------
# 5. Distillation schedule (Sec. 2-3; Alg. 1): which teacher checkpoint each method learns from at each student
# step. Each distillation method owns a row of a stacked teacher, whose weights are swapped for that checkpoint.

def schedule_ckpt(method, t, steps, args, stage1=None):
    """Teacher checkpoint step that `method` learns from at student step t; `steps` are the saved ones."""
    final = steps[-1]
    if method in ("oneshot", "extract"):  # extract: the final teacher alone, in both of its stages
        return final
    if method == "progressive":  # the first saved checkpoint at or after t x speed (the official parity code)
        return next((s for s in steps if s >= t * args.speed), final)
    if method.startswith("two_shot"):  # Alg. 1: stage-1 checkpoint for T steps, then the final one
        return stage1 if t < args.T else final
    raise ValueError(method)


class TeacherSlots:
    """The teacher checkpoints that the distillation students need at the current step, stacked: one batched forward
    serves them all. Methods that want the same checkpoint share a row: the final teacher runs once, not per method."""

    def __init__(self, args, specs, saved):
        self.args, self.run_dir, self.saved = args, args.teacher_dir or args.out, saved
        self.methods = list(dict.fromkeys(sp["method"] for sp in specs if sp["method"] != "ce"))
        self.size = max(1, len(self.methods) - ({"oneshot", "extract"} <= set(self.methods)))  # they share the final
        self.stage1 = {sp["method"]: sp["stage1"] for sp in specs}
        self.student_method = [sp["method"] for sp in specs]
        self.model = make_model(args, "teacher", self.size).eval()
        self.rows, self.active = [], self.size  # the checkpoint step held by each row; the rows in use
        self.fixed_rows = args.cuda_graph and args.device.startswith("cuda")  # a CUDA graph: static shapes, all rows
        self.row_of_student = torch.zeros(len(specs), dtype=torch.long, device=args.device)
        self.extract = Extraction(args, self.run_dir, saved[-1]) if "extract" in self.methods else None

    def refresh(self, t):
        want = {m: schedule_ckpt(m, t, self.saved, self.args, self.stage1[m]) for m in self.methods}
        rows = sorted(set(want.values()))
        if self.fixed_rows:
            rows += [rows[-1]] * (self.size - len(rows))
        if rows == self.rows:
            return
        for i, step in enumerate(rows):
            if i >= len(self.rows) or self.rows[i] != step:
                load_into(self.model, i, load_teacher(self.run_dir, step, self.args.device)["model"])
        self.rows, self.active = rows, len(rows)
        self.row_of_student.copy_(torch.tensor([rows.index(want[m]) if m in want else 0 for m in self.student_method]))

    @torch.no_grad()
    def logits(self, x, hidden=False):
        """x: (N, n) -> teacher logits (active rows, N, 2); hidden: and the hidden representations (the model's)."""
        params = {k: v[:self.active] for k, v in self.model.named_parameters()}
        return torch.func.functional_call(self.model, params, (x.expand(self.active, -1, -1), hidden))


class Extraction:
    """Curriculum extraction (Gupta & Karmalkar 2025, arXiv 2503.17494) from the final teacher alone. The paper: stage 1
    fits the student's hidden representation to a fixed random projection of the teacher's, layer by layer; stage 2
    distils on its outputs (as one-shot). Its exact loss and sizes we did not find; ours, measured on the cpu MLP: P
    (d_teacher x d_student) ~ N(0, 1/d_teacher), one per layer and seed; targets standardised per unit on STATS_SAMPLES
    fresh samples; loss mean((h - target)^2) / mean(target^2); post-ReLU; 500 steps (90% by step 1000; 250-500 are the
    fastest, docs/parity.md). Transformer: `layers` equal sub-stages, the l-th on block l's output."""

    def __init__(self, args, run_dir, final_step):
        teacher = make_model(args, "teacher", 1).eval()
        load_into(teacher, 0, load_teacher(run_dir, final_step, args.device)["model"])
        x, _ = sample(generator(args.device, args.teacher_seed, 5), (STATS_SAMPLES,), args.n, args.support)
        with torch.no_grad():
            hidden = [h[0] for h in teacher(x[None], hidden=True)[1]]  # per layer: (N, [n,] d_teacher)
        d = args.student_width if args.arch == "mlp" else args.student_heads * args.student_head_dim
        gens, self.steps = [torch.Generator().manual_seed(999 + s) for s in args.seed_list], args.extract_steps
        self.P = [torch.stack([torch.randn(h.shape[-1], d, generator=g) / math.sqrt(h.shape[-1]) for g in gens])
                  .to(args.device) for h in hidden]  # per layer: (seeds, d_teacher, d)
        z = [torch.einsum("...i,sio->s...o", h, P) for h, P in zip(hidden, self.P)]  # (seeds, N, [n,] d)
        self.mu, self.sd = [t.mean(1) for t in z], [t.std(1) for t in z]  # per unit and position

    def loss(self, t_hidden, s_hidden, seed_idx, t):
        """(S,) normalised MSEs at layer l = floor(t x layers / --extract_steps); the last teacher row is the final."""
        now, out = torch.div(t * len(self.P), max(1, self.steps), rounding_mode="floor"), 0
        for l, (th, sh, P) in enumerate(zip(t_hidden, s_hidden, self.P)):
            z = blinear(th[-1].view(len(P), -1, *th.shape[2:]), P)  # (seeds, B, [n,] d)
            z = ((z - self.mu[l][:, None]) / self.sd[l][:, None])[seed_idx]
            out = out + torch.where(now == l, ((sh - z) ** 2).flatten(1).mean(-1) / (z ** 2).flatten(1).mean(-1), 0.0)
        return out


# ----------------------------------------------------------------------------------------------------
# 6. Students (Sec. 3, Fig. 1): every method, learning rate and seed is one slice of one stacked model.

def student_specs(args, methods, stage1):
    """One spec per stacked student: method x lr x seed (same seed => same init and data)."""
    return [{"method": m, "lr": lr, "seed": seed, "stage1": stage1.get(m)}
            for m in methods for lr in args.lrs for seed in args.seed_list]


def student_step(args, specs, model, opt, slots, x_buf, y_buf, loss_sum):
    """One optimizer step of all stacked students on the batch in x_buf (seeds, B, n): CE students on
    labels, the others on softmax(teacher / temperature) of their current checkpoint (Sec. 2)."""
    seed_idx = torch.tensor([args.seed_list.index(sp["seed"]) for sp in specs], device=args.device)
    is_distill = torch.tensor([sp["method"] != "ce" for sp in specs], device=args.device)
    is_extract = torch.tensor([sp["method"] == "extract" for sp in specs], device=args.device)
    nS, B = x_buf.shape[:2]

    def step():
        targets = F.one_hot(y_buf, 2).float()[seed_idx]  # (S, B, 2): labels for CE students
        if slots is not None:
            t_logits, t_hidden = slots.logits(x_buf.reshape(nS * B, -1), hidden=True)
            q = common.distill_targets(t_logits.view(-1, nS, B, 2), args.temperature)[slots.row_of_student, seed_idx]
            targets = torch.where(is_distill[:, None, None], q, targets)
        logits, hidden = model(x_buf[seed_idx], hidden=True)
        loss = common.soft_cross_entropy(logits, targets).mean(-1)  # (S,)
        if slots is not None and slots.extract is not None:  # extract's stage 1 (opt.t, a tensor, counts the steps)
            loss = torch.where(is_extract & (opt.t < args.extract_steps),
                               slots.extract.loss(t_hidden, hidden, seed_idx, opt.t), loss)
        loss.sum().backward()  # students are independent: the sum gives each its own gradient
        opt.step()
        loss_sum.add_(loss.detach())
    return step


def train_students(args, specs, heldout):
    """Train all students together; return their eval history. Resumable from ckpt/students_state.pt."""
    state_path, metrics = os.path.join(args.out, "ckpt", "students_state.pt"), os.path.join(args.out, "metrics.jsonl")
    methods = list(dict.fromkeys(sp["method"] for sp in specs))
    saved = common.saved_steps(teacher_ckpt(args.teacher_dir or args.out))
    slots = TeacherSlots(args, specs, saved) if methods != ["ce"] else None
    model = make_model(args, "student", len(specs), seeds=[sp["seed"] for sp in specs])
    opt = Optimizer(model.parameters(), args.optim, [sp["lr"] for sp in specs], args.beta_pair)
    gens = [generator(args.device, s, 2) for s in args.seed_list]
    state = load_state(args, state_path, "students", model, opt, gens)
    start, history = state["step"], state.get("history", {"steps": [], "acc": []})
    names = [f"{sp['method']}/lr={sp['lr']:g}/seed={sp['seed']}" for sp in specs]
    if slots is not None:
        slots.refresh(start)  # the teachers of the first step, loaded before a CUDA graph captures the step
    sched, t0 = (args.schedule, args.warmup, args.floor), time.time()
    blocks = train_blocks(args, "students", start, args.steps, sched, opt, gens, args.batch,
                          partial(student_step, args, specs, model, opt, slots), slots.refresh if slots else None)
    for step_no, losses in itertools.chain([(0, None)] if start == 0 else [], blocks):  # step 0: the init, untrained
        acc, _ = evaluate(model, *heldout)
        history["steps"].append(step_no)
        history["acc"].append(acc)
        train = {"train_loss": dict(zip(names, losses))} if losses else {}
        common.append_jsonl(metrics, {"phase": "students", "step": step_no, "acc": dict(zip(names, acc)), **train})
        if losses and (step_no % args.save_every == 0 or step_no == args.steps):
            save_state(state_path, step_no, model, opt, gens, history=history)
        if losses and (step_no % (10 * args.eval_every) == 0 or step_no == args.steps):
            best = "  ".join(f"{m} {max(a for a, sp in zip(acc, specs) if sp['method'] == m):.3f}" for m in methods)
            print(f"students step {step_no:>9d}  best acc: {best}  ({time.time() - t0:.0f}s)", flush=True)
    return history


def summarize_students(args, specs, history):
    """Per method: per-lr results, and the best lr (fewest mean steps to 90%, unreached counted as the
    budget; ties broken by final accuracy), the paper's protocol of reporting each method tuned."""
    steps, out = history["steps"], {}
    budget = lambda r: sum(args.steps if s is None else s for s in r["steps_to"]["0.9"])
    for method in dict.fromkeys(sp["method"] for sp in specs):
        by_lr = {}
        for lr in args.lrs:
            idx = [i for i, sp in enumerate(specs) if sp["method"] == method and sp["lr"] == lr]
            curves = [[row[i] for row in history["acc"]] for i in idx]
            by_lr[f"{lr:g}"] = {
                "lr": lr, "seeds": [specs[i]["seed"] for i in idx], "final_acc": [c[-1] for c in curves],
                "steps_to": {str(th): [common.steps_to(steps, c, th) for c in curves] for th in THRESHOLDS},
                "acc": curves}
        best = min(by_lr.values(), key=lambda r: (budget(r), -sum(r["final_acc"])))
        by_lr = {k: {key: v for key, v in r.items() if key != "acc"} for k, r in by_lr.items()}  # curves: best lr's
        out[method] = {**best, "by_lr": by_lr, "stage1": next(sp["stage1"] for sp in specs if sp["method"] == method)}
    return out


# ----------------------------------------------------------------------------------------------------
# 7. The probe (Sec. 3.2, Fig. 3 middle): |E[chi_A(x) p(class 1 | x)]| for every in-support monomial A
# of degree 1..k-1 and for random off-support monomials. A checkpoint inside the teacher's phase
# transition correlates with in-support monomials far above the off-support level: the curriculum.

def monomials(args):
    """{degree: (in-support index lists, off-support index lists)}; off-support ones are fixed by seed."""
    rng, support, out = random.Random(1234), set(args.support), {}
    for d in range(1, args.k):
        inside = [list(a) for a in itertools.combinations(args.support, d)]
        outside, tries = [], 0
        while len(outside) < args.probe_off and tries < 100 * args.probe_off:  # degree 1 has only n - k of them
            a = sorted(rng.sample(range(args.n), d))
            tries += 1
            if not set(a) <= support and a not in outside:
                outside.append(a)
        out[d] = (inside, outside)
    return out


def correlations(p, x, sets, chunk=2048):
    """|mean_x chi_A(x) p(x)| for each index list A in `sets`; p (N,), x (N, n)."""
    total = torch.zeros(len(sets), dtype=torch.float64, device=x.device)
    for i in range(0, len(sets), chunk):
        idx = torch.tensor(sets[i:i + chunk], device=x.device)  # all of one degree: (m, d)
        chi = x[:, idx].prod(-1)  # (N, m)
        total[i:i + chunk] = (p.double() @ chi.double()) / len(x)
    return total.abs().cpu().tolist()


@torch.no_grad()
def run_probe(args):
    """The probe at every saved teacher checkpoint (kept in probe.json for --resume). auto_ckpt, the stage-1
    checkpoint of --ckpt auto, is the one whose in-support correlations stand highest above the off-support ones."""
    path = os.path.join(args.out, "probe.json")
    if args.resume and os.path.exists(path):
        return common.read_json(path)
    steps = common.saved_steps(teacher_ckpt(args.teacher_dir or args.out))
    x, y = sample(generator(args.device, args.teacher_seed, 4), (args.probe_samples,), args.n, args.support)
    mons, name = monomials(args), lambda a: ",".join(map(str, a))
    model = make_model(args, "teacher", 1).eval()
    res = {"steps": steps, "acc": [], "score": [], "degrees": {
        str(d): {"in_support": {name(a): [] for a in inside}, "off_mean": [], "off_std": []}
        for d, (inside, _) in mons.items()}}
    for step in steps:
        load_into(model, 0, load_teacher(args.teacher_dir or args.out, step, args.device)["model"])
        p = torch.cat([torch.softmax(model(x[None, i:i + 4096]).float(), -1)[0, :, 1] for i in range(0, len(x), 4096)])
        res["acc"].append(((p > 0.5).long() == y).float().mean().item())
        for d, (inside, outside) in mons.items():
            entry = res["degrees"][str(d)]
            for a, c in zip(inside, correlations(p, x, inside)):
                entry["in_support"][name(a)].append(c)
            for key, v in zip(("off_mean", "off_std"), common.mean_std(correlations(p, x, outside))):
                entry[key].append(v)
        res["score"].append(max(in_over_off(res, d, -1) for d in mons))  # at the best degree
    best = max(range(len(steps)), key=lambda i: res["score"][i])
    res["auto_ckpt"], res["auto_degree"] = steps[best], max(mons, key=lambda d: in_over_off(res, d, best))
    common.write_json(res, path)
    return res


def in_over_off(probe, d, i):
    """Mean in-support correlation over off-support mean, degree d, checkpoint index i."""
    e = probe["degrees"][str(d)]
    inside = sum(v[i] for v in e["in_support"].values()) / len(e["in_support"])
    return inside / max(e["off_mean"][i], 1e-12)


def fig3_checkpoints(probe, inside):
    """Stage-1 checkpoints before, inside and after the transition (Fig. 3 right): inside is two_shot's (--ckpt);
    before is half its step; after is halfway from the teacher's first 99% to its final step."""
    steps, t99 = probe["steps"], common.steps_to(probe["steps"], probe["acc"], 0.99)
    nearest = lambda t: min(steps, key=lambda s: abs(s - t))
    return [nearest(inside / 2), inside, nearest(((t99 if t99 is not None else steps[-1]) + steps[-1]) / 2)]


# ----------------------------------------------------------------------------------------------------
# 8. Results: table, claim checks (results.json), figures (Fig. 1, Fig. 3; docs/parity_extra.py draws the rest).

def fmt_steps(values, budget):
    m, sd = common.mean_std([budget if v is None else v for v in values])
    hit = sum(v is not None for v in values)
    return f"{m:.0f} ± {sd:.0f}" + ("" if hit == len(values) else f" ({hit}/{len(values)} reached)")


def label(method, r):  # in the table and Fig. 3: two_shot methods name their stage-1 checkpoint
    return method + (f" (ckpt {r['stage1']})" if r.get("stage1") is not None else "")


def print_table(results, args):
    rows, t = [], results.get("teacher")
    if t:
        rows.append(["teacher", f"{args.teacher_lr:g}", *t["steps_to"].values(), f"{t['final_acc']:.3f}"])
    for method, r in results.get("students", {}).items():
        m, sd = common.mean_std(r["final_acc"])
        rows.append([label(method, r), f"{r['lr']:g}", fmt_steps(r["steps_to"]["0.9"], args.steps),
                     fmt_steps(r["steps_to"]["0.95"], args.steps), f"{m:.3f} ± {sd:.3f}"])
    if rows:
        print("\n" + common.format_table(["method", "lr", "steps to 90%", "steps to 95%", "final acc"], rows))


def claim_checks(results, args):
    """The acceptance checks of the README, computed from this run (per seed, each method at its best lr)."""
    st, checks = results.get("students", {}), {}
    budget = lambda v: args.steps if v is None else v
    fast = [m for m in ("progressive", "two_shot") if m in st]
    slow = [m for m in ("ce", "oneshot") if m in st]
    if fast and slow:
        checks["half_the_steps_every_seed"] = all(
            budget(f) <= 0.5 * budget(s) for a in fast for b in slow
            for f, s in zip(st[a]["steps_to"]["0.9"], st[b]["steps_to"]["0.9"]))
    probe = results.get("probe")
    if probe:
        chosen = results.get("two_shot_ckpt", probe["auto_ckpt"])
        i = probe["steps"].index(chosen)
        ratios = {d: in_over_off(probe, int(d), i) for d in probe["degrees"]}
        final = {d: in_over_off(probe, int(d), len(probe["steps"]) - 1) for d in probe["degrees"]}
        checks["chosen_ckpt_in_over_off"], checks["final_ckpt_in_over_off"] = ratios, final
        # with --ckpt auto the chosen checkpoint is the argmax of this ratio: then this says a curriculum checkpoint
        # exists; the second check says the final teacher has lost it (Fig. 3 middle: the signal is transient)
        # a checkpoint of the teacher's training (Sec. 3.2): not its untrained step 0, not its last
        inside = 0 < chosen < probe["steps"][-1]
        checks["chosen_ckpt_3x"] = inside and max(ratios.values()) >= 3
        checks["final_ckpt_3x_below_chosen"] = max(final.values()) * 3 <= max(ratios.values())
    return checks


def make_figures(results, args):
    plt = common.plt()
    st, teacher, probe = results.get("students", {}), results.get("teacher"), results.get("probe")
    colors = {"teacher": "k", "ce": "tab:blue", "oneshot": "tab:orange", "progressive": "tab:green",
              "two_shot": "tab:red", "two_shot_before": "tab:purple", "two_shot_after": "tab:brown", "extract": "c"}
    if st or teacher:  # Fig. 1 left / middle
        fig, ax = plt.subplots(figsize=(6, 4))
        if teacher:
            ax.plot(teacher["steps"], teacher["acc"], "--", color="k", label="teacher")
        for m in ("ce", "oneshot", "progressive", "two_shot", "extract"):
            if m in st:  # one-shot dotted: at temperature ~0 it can coincide with CE (the final teacher = labels)
                common.plot_band(ax, results["student_steps"], st[m]["acc"],
                                 f"{m} (lr {st[m]['lr']:g})", colors[m], ":" if m == "oneshot" else "-")
        ax.set(xlabel="training steps", ylabel="held-out accuracy", ylim=(0.4, 1.02),
               title=f"{args.arch.upper()} on ({args.n},{args.k})-sparse parity")
        ax.legend(fontsize=8)
        save(fig, args.out, "fig1_accuracy.png")
    if probe:  # Fig. 3: the teacher, the probe at its strongest degree, (2,T)-progressive students if trained
        chosen = results.get("two_shot_ckpt", probe["auto_ckpt"])
        two_shots = [m for m in ("two_shot_before", "two_shot", "two_shot_after") if m in st]
        fig, axes = plt.subplots(1, 3 if two_shots else 2, figsize=(15 if two_shots else 10, 4))
        axes[0].plot(probe["steps"], probe["acc"], "k-")
        for name, s in zip(("before", "inside", "after"), results.get("fig3_ckpts", [chosen])):
            axes[0].plot(s, probe["acc"][probe["steps"].index(s)], "o", label=f"{name}: {s}")
        axes[0].set(xlabel="teacher steps", ylabel="accuracy", title="teacher accuracy, candidates")
        axes[0].legend(fontsize=8)
        plot_degree(axes[1], probe, probe["auto_degree"], chosen)
        if two_shots:
            for m in two_shots + (["oneshot"] if "oneshot" in st else []):
                common.plot_band(axes[2], results["student_steps"], st[m]["acc"], label(m, st[m]), colors[m])
            axes[2].axvline(args.T, color="gray", ls=":", lw=1)
            axes[2].set(xlabel="student steps", ylabel="accuracy", title=f"(2,{args.T})-progressive", ylim=(0.4, 1.02))
            axes[2].legend(fontsize=8)
        save(fig, args.out, "fig3_curriculum.png")


def save(fig, folder, name):
    fig.tight_layout()
    fig.savefig(os.path.join(folder, name), dpi=120)
    common.plt().close(fig)


def plot_degree(ax, probe, d, chosen):
    """Fig. 3 middle: the in-support correlations of degree d against the off-support mean ± std."""
    e = probe["degrees"][str(d)]
    for name, vals in e["in_support"].items():
        ax.plot(probe["steps"], vals, lw=1, label="{" + name + "}" if len(e["in_support"]) <= 6 else None)
    m, sd = torch.tensor(e["off_mean"]), torch.tensor(e["off_std"])
    ax.plot(probe["steps"], m, "k--", lw=1, label="off-support mean ± std")
    ax.fill_between(probe["steps"], (m - sd).clamp(min=0), m + sd, color="gray", alpha=0.3, lw=0)
    ax.axvline(chosen, color="gray", ls=":", lw=1)
    ax.set(xlabel="teacher steps", ylabel="|E[chi_A(x) p(x)]|", title=f"degree-{d} monomials")
    ax.legend(fontsize=7)


# ----------------------------------------------------------------------------------------------------
# 9. Main: teacher -> probe -> students -> results.

def config_of(args):  # config.json: every flag but --resume and --halt_at, not the lists validate() parses
    return {k: v for k, v in vars(args).items() if k not in {"resume", "halt_at", "lrs", "seed_list", "beta_pair"}}


def start_run(args):
    """Seeds, the run folder (config.json) and the held-out set; docs/parity_sweep.py starts its runs here too."""
    torch.manual_seed(args.teacher_seed)  # dropout masks; everything else uses its own generator
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    common.prepare_run_dir(args.out, config_of(args), args.resume)
    return sample(generator(args.device, 12345, 3), (args.eval_size,), args.n, args.support)


def main(argv=None):
    args = parse_args(argv)
    heldout = start_run(args)
    results, t_start = {"config": config_of(args)}, time.time()
    if args.mode != "ce" or args.teacher_dir is not None:  # all but CE students need a teacher
        if args.teacher_dir is None:
            train_teacher(args, heldout)
        run = args.teacher_dir or args.out  # the accuracies from the log: reading every checkpoint file costs GBs
        acc_at = {r["step"]: r["acc"] for r in common.read_jsonl(os.path.join(run, "metrics.jsonl"))
                  if r["phase"] == "teacher"}
        steps = common.saved_steps(teacher_ckpt(run))
        accs = [acc_at[s] for s in steps]
        results["teacher"] = {"steps": steps, "acc": accs, "final_acc": accs[-1],
                              "steps_to": {str(th): common.steps_to(steps, accs, th) for th in THRESHOLDS}}
    if args.mode in ("all", "probe") or (args.mode == "two_shot" and args.ckpt == "auto"):
        results["probe"] = run_probe(args)
    if args.mode in ("all", "two_shot"):
        results["two_shot_ckpt"] = results["probe"]["auto_ckpt"] if args.ckpt == "auto" else int(args.ckpt)
        print(f"two_shot: stage-1 checkpoint {results['two_shot_ckpt']} (--ckpt {args.ckpt}); final from T={args.T}")
    methods = {"all": ["ce", "oneshot", "progressive", "two_shot", "two_shot_before", "two_shot_after", "extract"],
               "teacher": [], "probe": []}.get(args.mode, [args.mode])
    stage1 = {"two_shot": results.get("two_shot_ckpt")}
    if "two_shot_before" in methods:  # Fig. 3 right's controls
        results["fig3_ckpts"] = fig3_checkpoints(results["probe"], results["two_shot_ckpt"])
        stage1["two_shot_before"], _, stage1["two_shot_after"] = results["fig3_ckpts"]
    if methods:
        specs = student_specs(args, methods, stage1)
        history = train_students(args, specs, heldout)
        results["student_steps"], results["students"] = history["steps"], summarize_students(args, specs, history)
    results["checks"], results["measured"] = common.split_checks(claim_checks(results, args))
    common.write_json(results, os.path.join(args.out, "results.json"))
    print_table(results, args)
    if results["checks"]:
        print("\nchecks:", results["checks"])
    make_figures(results, args)
    print(f"\nwrote results.json and figures to {args.out}/ in {time.time() - t_start:.0f}s")
    return results


if __name__ == "__main__":
    main()
