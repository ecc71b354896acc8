"""Tests of lm_pretrain.py: data pipeline, tokenizer, masking, schedules, bad input, resume, a smoke run of
--mode all, and the torchrun equivalence (2 gloo processes against 1 process with the same global batch).
No network: every run reads the committed fixture tests/data/pride_and_prejudice_ch01-12.txt with --data."""
import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import common  # noqa: E402
import lm_pretrain as lm  # noqa: E402

FIXTURE = os.path.join(ROOT, "tests", "data", "pride_and_prejudice_ch01-12.txt")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def smoke_argv(tmp_path, *extra, out="out"):
    return ["--preset", "smoke", "--data", FIXTURE, "--cache", str(tmp_path / "cache"),
            "--out", str(tmp_path / out), "--device", "cpu", *extra]


def run_script(argv, torchrun=0):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] \
        if torchrun else [sys.executable]
    return subprocess.run(launcher + [os.path.join(ROOT, "lm_pretrain.py")] + argv, env=ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def expect_exit2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        lm.main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# Data, tokenizer, masking

def test_hash_split_never_overlaps(tmp_path):
    args = lm.parse_args(smoke_argv(tmp_path))
    docs, names, _ = lm.read_documents(args)
    assert set(names) == {"pride_and_prejudice_ch01-12"} and len(names) == len(docs)  # one source: the file
    docs = [d for d in docs if len(lm.tokenize(d)) >= args.min_doc_tokens]
    docs += docs[:20]  # duplicates must land in the split of their first copy
    held = {d for d in docs if lm.is_heldout(d, args.heldout_frac)}
    train = {d for d in docs if not lm.is_heldout(d, args.heldout_frac)}
    assert held and train and not held & train
    assert 0.1 < len(held) / len(held | train) < 0.3  # about --heldout_frac 0.2
    streams, vocab, sources, _ = lm.load_data(args)
    assert sources == ["pride_and_prejudice_ch01-12"] and (streams["heldout_source"] == 0).all()
    n_sep = {k: int((streams[k] == lm.SEP).sum()) for k in ("train", "heldout")}
    assert n_sep == {"train": len([d for d in docs[:-20] if d in train]),
                     "heldout": len([d for d in docs[:-20] if d in held])}  # one [SEP] per document


# Tokenizes --data for each argv of the JSON list in sys.argv[1] (lm_pretrain's cache: tokenizer.json, streams.pt).
TOKENIZE = "import json, sys, lm_pretrain as lm; [lm.load_data(lm.parse_args(a)) for a in json.loads(sys.argv[1])]"


def test_two_processes_with_other_hash_seeds_tokenize_alike(tmp_path):
    """The split, the vocabulary, the BPE merges and the token streams do not depend on Python's string hashing
    (set and dict order): two processes with PYTHONHASHSEED 1 and 2 write the same word and BPE tokenizers."""
    for seed in ("1", "2"):
        runs = [smoke_argv(tmp_path / seed, "--tokenizer", kind) for kind in ("word", "bpe")]
        r = subprocess.run([sys.executable, "-c", TOKENIZE, json.dumps(runs)], env={**ENV, "PYTHONHASHSEED": seed},
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    folders = [sorted((tmp_path / seed / "cache").glob("tokenized-*")) for seed in ("1", "2")]
    assert len(folders[0]) == 2 and [f.name for f in folders[0]] == [f.name for f in folders[1]]
    for one, two in zip(*folders):
        tok = common.read_json(one / "tokenizer.json")
        assert tok == common.read_json(two / "tokenizer.json") and len(tok["vocab"]) > 250
        assert tok["tokenizer"] == "word" or len(tok["merges"]) > 100
        mine, theirs = common.load_checkpoint(one / "streams.pt"), common.load_checkpoint(two / "streams.pt")
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_char_tokenizer_lowercases_and_folds_whitespace():
    assert lm.tokenize("It is\n\n a  Truth.", "char") == list("it is a truth.")


def test_bpe_merges_the_most_frequent_pair_first():
    # Sennrich et al.'s example: "es" (9: newest 6, widest 3), then "est"; then the first of the 7s
    counts = {"low": 5, "lower": 2, "newest": 6, "widest": 3}
    merges = lm.learn_merges(counts, 14, 1)  # 11 letters (l ##o ##w ##e ##r n ##s ##t w ##i ##d), 3 merges
    assert merges == [("##e", "##s"), ("##es", "##t"), ("l", "##o")]
    order = {p: r for r, p in enumerate(merges)}
    assert lm.split_word("lowest", order) == ["lo", "##w", "##est"]
    assert lm.split_word("newer", order) == ["n", "##e", "##w", "##e", "##r"]
    assert lm.learn_merges(counts, 14, 3) == merges + [("lo", "##w")]  # "##r" is seen twice: 10 letters
    assert lm.learn_merges({"a": 3}, 5, 1) == []  # no pair left: fewer merges than asked


def regex_merge(pieces, pair):
    pattern = rf"(?<!\S){re.escape(pair[0])} {re.escape(pair[1])}(?!\S)"
    return re.sub(pattern, pair[0] + pair[1][2:], " ".join(pieces)).split()


def scan_merges(counts, n_pieces, min_count):
    """The BPE learner before the heap (a scan of every pair count per merge, a regular expression
    for each merge in a word): the reference."""
    words, freq = [lm.split_word(w, {}) for w in counts], list(counts.values())
    pairs, letters, where, merges = Counter(), Counter(), {}, []

    def count(i, sign):
        for p in zip(words[i], words[i][1:]):
            pairs[p] += sign * freq[i]
            where.setdefault(p, set()).add(i)
    for i in range(len(words)):
        count(i, 1)
        letters.update({s: n * freq[i] for s, n in Counter(words[i]).items()})
    n_letters = sum(c >= min_count for c in letters.values())
    while n_letters + len(merges) < n_pieces:
        best = max(pairs, key=pairs.get, default=None)
        if pairs[best] <= 0:  # a Counter gives 0 for None: no pair left
            break
        merges.append(best)
        for i in where.pop(best):
            count(i, -1)
            words[i] = regex_merge(words[i], best)
            count(i, 1)
        del pairs[best]
    return merges


@pytest.mark.parametrize("n_pieces,min_count", [(300, 1), (600, 3)])
def test_bpe_heap_learner_gives_the_scan_learners_merges(n_pieces, min_count):
    with open(FIXTURE) as f:
        counts = Counter(w for w in lm.tokenize(f.read()) if w.isalpha())
    assert lm.learn_merges(counts, n_pieces, min_count) == scan_merges(counts, n_pieces, min_count)


def test_tokenizer_round_trip_and_special_tokens(tmp_path):
    text = "It is a truth universally acknowledged, that a single man must be in want of a wife."
    vocab = lm.build_vocab([lm.tokenize(text)], vocab_size=100, min_count=1)
    assert vocab[:5] == ["[PAD]", "[MASK]", "[CLS]", "[SEP]", "[UNK]"]
    assert (lm.PAD, lm.MASK, lm.CLS, lm.SEP, lm.UNK) == (0, 1, 2, 3, 4)
    index = {w: i for i, w in enumerate(vocab)}
    ids = lm.encode(lm.tokenize(text), index)
    words = [vocab[i] for i in ids]
    assert " ".join(words) == "it is a truth universally acknowledged , that a single man must be in want of a wife ."
    assert lm.encode(words, index) == ids
    assert lm.encode(["zebra"], index) == [lm.UNK]
    assert vocab[5] == "a"  # most frequent word first
    small = lm.build_vocab([lm.tokenize(text)], vocab_size=8, min_count=1)
    assert len(small) == 8 and small[5:] == ["a", ",", "."]  # ties broken alphabetically
    # the tokenizer cached by a run: specials first, the size asked for, a word-level vocabulary
    args = lm.parse_args(smoke_argv(tmp_path))
    _, vocab, _, folder = lm.load_data(args)
    saved = common.read_json(os.path.join(folder, "tokenizer.json"))
    assert saved["vocab"] == vocab and vocab[:5] == lm.SPECIALS and len(vocab) == args.vocab_size
    assert "elizabeth" in vocab and "bennet" in vocab
    # --tokenizer bpe: pieces of the training words; the held-out source ids still line up with the tokens
    args = lm.parse_args(smoke_argv(tmp_path, "--tokenizer", "bpe"))
    streams, vocab, _, folder = lm.load_data(args)
    merges = common.read_json(os.path.join(folder, "tokenizer.json"))["merges"]
    assert len(vocab) <= args.vocab_size and len(merges) > 0 and any(w.startswith("##") for w in vocab)
    assert len(streams["heldout_source"]) == len(streams["heldout"]) and (streams["train"] == lm.UNK).sum() == 0


def test_bpe_and_char_runs_end_to_end(tmp_path):
    for kind in ("bpe", "char"):  # the paper preset's and the cpu preset's
        res = lm.main(smoke_argv(tmp_path, "--tokenizer", kind, "--seeds", "0", out=kind))
        assert set(res["students"]) == set(lm.METHODS) and res["probe"] and "three_phases" in res["checks"]
        assert common.read_json(tmp_path / kind / "tokenizer.json")["tokenizer"] == kind


def write_sources(folder, n_docs=100):
    """One .txt file per source (a, b, c), each with its own words (a0..a19, ...), in short documents."""
    folder.mkdir()
    gen = torch.Generator().manual_seed(0)
    for name in "abc":
        docs = [" ".join(f"{name}{i}" for i in torch.randint(20, (15,), generator=gen).tolist()) + "."
                for _ in range(n_docs)]
        (folder / f"{name}.txt").write_text("\n\n".join(docs) + "\n")


def test_eval_set_samples_every_source(tmp_path):
    """The eval set is a random sample of all held-out sequences (the first ones come from a.txt only), each
    token's source is its file's, and evaluate() reports accuracy per source."""
    write_sources(tmp_path / "multi")
    args = lm.parse_args(["--preset", "smoke", "--data", str(tmp_path / "multi"), "--cache", str(tmp_path / "cache"),
                          "--eval_seqs", "15", "--device", "cpu"])
    streams, vocab, sources, _ = lm.load_data(args)
    assert sources == ["a", "b", "c"] and len(streams["heldout_source"]) == len(streams["heldout"])
    first = lm.pack(streams["heldout_source"], args.seq_len)[:args.eval_seqs, 1:]
    assert 2 not in first  # the first held-out sequences hold no c.txt text
    ids, src, probe, _ = lm.heldout_sets(args, streams)
    assert len(ids) == args.eval_seqs and torch.equal(probe, ids[:args.probe_seqs])  # probe set within the eval set
    words = ids >= len(lm.SPECIALS)
    assert set(src[words].tolist()) == {0, 1, 2}  # every source is evaluated
    assert all(vocab[i][0] in (".", sources[s]) for i, s in zip(ids[words].tolist(), src[words].tolist()))
    args.vocab_actual = len(vocab)
    data = {"heldout": (*lm.mask_batch(args, ids, 12345, 0), src), "sources": sources}
    model = lm.make_model(args, "student", 0).eval()
    inputs, labels = data["heldout"][:2]
    sel = labels != -100
    with torch.no_grad():  # the answer known: the model's own prediction is the label at every other masked token
        guess = model(inputs, select=sel).argmax(-1)
    labels[sel] = torch.where(torch.arange(len(guess)) % 2 == 0, guess, labels[sel])
    loss, acc, by_source = lm.evaluate(args, model, data, 0)
    hit = labels[sel] == guess
    assert set(by_source) == {"a", "b", "c"} and 0.45 < acc == pytest.approx(hit.float().mean().item())
    for i, s in enumerate(sources):
        assert by_source[s] == pytest.approx(hit[src[sel] == i].float().mean().item()), s
    n = src[data["heldout"][1] != -100].bincount(minlength=3)  # accuracy = mean of the per-source ones, weighted
    assert acc == pytest.approx(sum(by_source[s] * n[i].item() for i, s in enumerate(sources)) / n.sum().item())


def test_packing_of_the_heldout_stream():
    stream = torch.arange(10, 10 + 31, dtype=torch.int32)
    seqs = lm.pack(stream, 8)
    assert seqs.shape == (4, 8) and (seqs[:, 0] == lm.CLS).all()
    assert seqs[:, 1:].flatten().tolist() == list(range(10, 38))


def test_window_batches_are_seeded_contiguous_pieces_of_the_stream():
    args = SimpleNamespace(batch=64, seq_len=8)
    stream = torch.arange(10, 110, dtype=torch.int32)
    ids = lm.train_batch(args, stream, step=3, seed=1)
    assert ids.shape == (64, 8) and (ids[:, 0] == lm.CLS).all()
    assert ((ids[:, 2:] - ids[:, 1:-1]) == 1).all() and 10 <= ids[:, 1:].min() and ids.max() <= 109
    assert torch.equal(ids, lm.train_batch(args, stream, 3, 1))  # the same on resume, on every process
    assert not torch.equal(ids, lm.train_batch(args, stream, 4, 1))


def test_workers_give_the_same_students(tmp_path):
    """--workers 2: the student runs in two spawned one-thread processes, the same numbers as in one."""
    one = lm.main(smoke_argv(tmp_path, "--seeds", "0,1", out="one"))
    teacher = ["--teacher_dir", str(tmp_path / "one")]
    two = lm.main(smoke_argv(tmp_path, "--seeds", "0,1", "--workers", "2", *teacher, out="two"))
    assert two["students"] == one["students"] and two["lr_search"] == one["lr_search"]


def test_masking_proportions():
    args = lm.parse_args(["--preset", "smoke", "--data", FIXTURE])
    args.vocab_actual = 1000
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (400, 128), generator=gen)
    ids[:, 0] = lm.CLS
    ids[:, 50] = lm.SEP
    ids[:, 60] = lm.UNK
    inputs, labels = lm.mask_batch(args, ids, seed=0, step=0)
    sel = labels != -100
    words = ids >= 5
    assert not sel[~words].any()  # special tokens and [UNK] are never selected
    assert abs(sel.sum() / words.sum() - 0.15) < 0.005
    assert (labels[sel] == ids[sel]).all()
    n = sel.sum().item()
    as_mask = (inputs[sel] == lm.MASK).sum().item() / n
    kept = (inputs[sel] == ids[sel]).sum().item() / n
    assert abs(as_mask - 0.8) < 0.015 and abs(kept - 0.1) < 0.015  # 80/10/10 (a random draw may equal the word)
    assert ((inputs[sel] != lm.MASK) & (inputs[sel] != ids[sel])).float().sum() / n > 0.08
    assert (inputs[~sel] == ids[~sel]).all()
    again = lm.mask_batch(args, ids, seed=0, step=0)
    assert all(torch.equal(a, b) for a, b in zip((inputs, labels), again))  # a function of (seed, step)


def test_masked_logits_equal_the_full_forward():  # Encoder(select=...) applies the head only there
    args = lm.parse_args(["--preset", "smoke", "--data", FIXTURE])
    args.vocab_actual = 50
    model = lm.make_model(args, "teacher", 0)
    ids = torch.randint(5, 50, (3, 16), generator=torch.Generator().manual_seed(1))
    inputs, labels = lm.mask_batch(args, ids, seed=0, step=0)
    labels[0, 3] = ids[0, 3]  # at least one selected position
    logits, y = lm.masked_logits(model, inputs, labels)
    full = model(inputs)
    torch.testing.assert_close(logits, full[labels != -100])
    assert torch.equal(y, labels[labels != -100])


def test_the_copies_of_pcfgs_encoder_masking_probe_and_schedule_give_pcfgs_numbers():
    """lm_pretrain.py carries its own copies (it must run from a copy with common.py alone): the same outputs as
    pcfg.py's originals on the same inputs, with the arguments lm_pretrain.py used to pass them."""
    import pcfg
    args = lm.parse_args(["--preset", "smoke", "--data", FIXTURE, "--refresh", "8"])
    args.vocab_actual = 50
    gen = torch.Generator().manual_seed(3)
    ids = torch.cat([torch.full((4, 1), lm.CLS), torch.randint(3, 50, (4, 23), generator=gen)], 1)
    mine = lm.mask_batch(args, ids, seed=2, step=7)
    theirs = pcfg.mask_tokens(ids, torch.Generator().manual_seed(7_919 * 2 + 7), args.mask_rate, lm.MASK,
                              torch.arange(len(lm.SPECIALS), 50), ids >= len(lm.SPECIALS), hide_selected=False,
                              attendable=torch.ones_like(ids, dtype=torch.bool))
    assert all(torch.equal(a, b) for a, b in zip(mine, theirs)) and theirs[2].all() and (mine[1] != -100).any()
    model = lm.make_model(args, "teacher", 0).eval()
    torch.manual_seed(0)
    reference = pcfg.Encoder(50, args.seq_len, args.teacher_layers, args.teacher_heads, args.head_dim).eval()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    sel = mine[1] != -100
    assert torch.equal(model(mine[0], select=sel), reference(mine[0], theirs[2], select=sel))  # BERT: no key hidden
    keys = torch.ones_like(ids, dtype=torch.bool)
    assert torch.equal(model(ids), reference(ids, keys))
    probe = lm.ngram_probe(model, ids, [4, 12, 21], lm.WINDOWS)
    ref = pcfg.ngram_probe(reference, ids, keys, [4, 12, 21], lm.WINDOWS, lm.MASK, hide_masked=False)
    for w in lm.WINDOWS:
        assert probe[w]["count"] == ref[w]["count"] == 12
        for kind in ("robust", "close"):
            for m in ("l1", "tv"):
                assert probe[w][kind][m] == {k: ref[w][kind][m][k] for k in ("median", "q25", "q75", "mean")}
    saved = list(range(0, 41, 5))
    for t in range(40):
        assert lm.schedule_ckpt(args, "progressive", t, saved, None, 40) == \
            common.progressive_ckpt(t, lm.horizon_steps(saved, args, 40), args.speed, args.refresh)


def test_progressive_and_two_shot_schedules():
    args = lm.parse_args(["--preset", "smoke", "--data", FIXTURE, "--refresh", "10", "--ckpt_every", "5",
                          "--eval_every", "5", "--T", "20",
                          "--budgets", "40"])
    saved = list(range(0, 41, 5))
    prog = [lm.schedule_ckpt(args, "progressive", t, saved, None, 40) for t in (0, 9, 10, 25, 39)]
    assert prog == [10, 10, 20, 30, 40]  # the next refresh point (the official PCFG code)
    assert lm.schedule_ckpt(args, "oneshot", 0, saved, None, 40) == 40
    two = [lm.schedule_ckpt(args, "two_shot", t, saved, 15, 40) for t in (0, 19, 20, 39)]
    assert two == [15, 15, 40, 40]  # T=20 steps on the stage-1 checkpoint, then the final one


def test_every_method_stays_within_the_teachers_horizon():
    """pcfg.py's rule (Fig. 1 right: at budget B every method uses a teacher trained as long as itself): the
    checkpoints up to min(speed x B, last step), at the cpu preset's checkpoints every 250 (8000 teacher steps here)."""
    args = lm.parse_args(["--preset", "cpu", "--data", FIXTURE, "--refresh", "3000", "--T", "4000"])
    assert (args.ckpt_every, args.speed, args.T) == (250, 1, 4000)
    saved = list(range(0, 8001, 250))
    for budget, last in ((4100, 4000), (6000, 6000), (8000, 8000), (12000, 8000)):
        prog = [lm.schedule_ckpt(args, "progressive", t, saved, None, budget) for t in range(budget)]
        assert max(prog) == last and prog == sorted(prog) and prog[0] == 3000  # C1 first (Sec. 5)
        assert {lm.schedule_ckpt(args, "oneshot", t, saved, None, budget) for t in (0, budget - 1)} == {last}
        two = [lm.schedule_ckpt(args, "two_shot", t, saved, 3100, budget) for t in (0, 3999, 4000, budget - 1)]
        assert two == [3000] * 2 + [last] * 2  # the stage-1 checkpoint: the last saved one before it
    # budgets share a run where their teacher's horizon is the same (CE: always, at a constant lr)
    args.budget_list = [4000, 8000, 12000]
    jobs = lm.student_jobs(args, lm.METHODS, saved)
    assert {m: [j["budgets"] for j in jobs if j["method"] == m and j["seed"] == 0] for m in ("ce", "oneshot")} == \
        {"ce": [[4000, 8000, 12000]], "oneshot": [[4000], [8000, 12000]]}
    args.schedule = "cosine"  # the lr schedule depends on the budget: one run per budget
    assert [j["budgets"] for j in lm.student_jobs(args, ["oneshot"], saved)][:3] == [[4000], [8000], [12000]]


def test_inflection_is_in_the_sharpest_drop():
    """pcfg.py's rule: the steepest (smoothed) fall per step, not late noise between neighbours."""
    steps = list(range(0, 3001, 100))
    loss = [8.0 if s == 0 else 6.0 - 0.6 / (1 + math.exp(-(s - 450) / 60)) - 1e-4 * s for s in steps]
    loss[-2] -= 0.05
    assert 300 <= lm.loss_phases(steps, loss)["inflection"] <= 600
    assert lm.loss_phases(steps[:5], loss[:5]) is None  # too few checkpoints for three breakpoints


def test_three_phases_on_a_hand_made_curve():
    steps = list(range(0, 4001, 250))  # init, plateau, a 1.5-nat drop around 1500, slow decay
    loss = [8.0 if s == 0 else 6.0 - 1.5 / (1 + math.exp(-(s - 1500) / 150)) - 5e-5 * s for s in steps]
    ph = lm.loss_phases(steps, loss)
    assert (ph["drop_start"], ph["inflection"], ph["drop_end"]) == (1250, 1500, 2000)
    run = {"phases": ph, "teacher": {"steps": steps}}
    checks = lm.claim_checks(run, SimpleNamespace(budget_list=[10]))
    assert checks["three_phases"] is True and checks["drop_nats"] == pytest.approx(1.25, abs=0.01)
    steady = [8.0 - 0.001 * s for s in steps]  # no plateau: one steady fall
    run = {"phases": lm.loss_phases(steps, steady), "teacher": {"steps": steps}}
    assert lm.claim_checks(run, SimpleNamespace(budget_list=[10]))["three_phases"] is False


def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    short = tmp_path / "short.txt"
    short.write_text("Chapter 1\n\nYes.\n\nNo, indeed.\n")
    folder = tmp_path / "no_txt"
    folder.mkdir()
    cases = [
        (["--data", str(tmp_path / "missing")], "--data"),
        (["--data", str(empty)], "no usable documents"),
        (["--data", str(short)], "no usable documents"),
        (["--data", str(folder)], "no .txt files"),
        (["--data", FIXTURE, "--vocab_size", "5"], "--vocab_size"),
        (["--data", FIXTURE, "--micro_batch", "3"], "--micro_batch"),
        (["--data", FIXTURE, "--heldout_frac", "0.0001"], "held"),
    ]
    for extra, words in cases:
        argv = ["--preset", "smoke", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), *extra]
        err = expect_exit2(argv, capsys)
        assert words in err, (extra, err)
        assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists(), extra


def test_no_corpus_exits_2_naming_the_command(tmp_path, capsys):
    err = expect_exit2(["--preset", "smoke", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "o")], capsys)
    assert "python data/prepare_lm_corpus.py --cache" in err and not (tmp_path / "o").exists()


def test_every_float_flag_refuses_nan_and_inf(tmp_path, capsys):
    floats = [a.option_strings[0] for a in lm.build_parser()._actions if a.type is float]
    assert {"--teacher_lr", "--heldout_frac", "--floor", "--weight_decay", "--clip", "--mask_rate"} <= set(floats)
    for flag in floats + ["--lr_grid", "--betas"]:
        for bad in ("nan", "inf"):
            value = {"--lr_grid": f"1e-2,{bad}", "--betas": f"0.9,{bad}"}.get(flag, bad)
            err = expect_exit2(smoke_argv(tmp_path, flag, value), capsys)
            assert f"error: {flag}: " in err, (flag, value, err)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_nan_stops_the_run_with_exit_3_and_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # AdamW at lr 1e30 without clipping: the loss is NaN by step 4
        lm.main(smoke_argv(tmp_path, "--mode", "teacher", "--teacher_lr", "1e30", "--clip", "0"))
    err = capsys.readouterr().err
    assert e.value.code == 3 and "error: teacher training loss at step 4 is nan; stopping" in err, err
    assert not (tmp_path / "out" / "results.json").exists()


# ----------------------------------------------------------------------------------------------------
# End to end

def test_paper_preset_builds_and_takes_its_first_steps_on_cpu(tmp_path):
    """The paper's student (4 layers x 256), sequences of 128 words, cosine schedule with 6% warmup, for 2 steps
    of a tiny batch; its BERT-base teacher (12 layers x 768) is built and run forward, not trained: 2 steps and
    its checkpoints (weights and AdamW state, 1.4 GB) take over 10 s on one thread."""
    small = ["--batch", "2", "--micro_batch", "2", "--eval_seqs", "2", "--probe_seqs", "2", "--eval_every", "1"]
    res = lm.main(smoke_argv(tmp_path, "--preset", "paper", "--mode", "ce", *small, "--budgets", "2", "--seeds", "0",
                             "--lr", "1e-3"))
    cfg = res["config"]
    assert (cfg["seq_len"], cfg["student_layers"], cfg["student_heads"], cfg["head_dim"]) == (128, 4, 4, 64)
    assert (cfg["schedule"], cfg["warmup"], cfg["vocab_size"]) == ("cosine", 0.06, 30522)
    records = common.read_jsonl(tmp_path / "out" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2] and res["students"]["ce"][0]["acc"] == records[1]["val_acc"]
    assert math.isfinite(records[1]["val_loss"]) and records[1]["train_loss"] < records[0]["train_loss"]
    args = lm.parse_args(smoke_argv(tmp_path, "--preset", "paper"))
    args.vocab_actual = 100
    teacher = lm.make_model(args, "teacher", 0)
    blocks = sum(p.numel() for n, p in teacher.named_parameters() if n.startswith("blocks."))
    assert blocks == 12 * 7_087_872  # BERT-base's layers: attention 4 x (768^2 + 768), MLP 768 <-> 3072, 2 norms
    assert teacher(torch.randint(5, 100, (1, 128))).shape == (1, 128, 100)

def test_resume_gives_the_same_results(tmp_path, kill_at):
    lm.main(smoke_argv(tmp_path, "--save_every", "4", "--seeds", "0,1", out="a"))
    for halt in ("teacher:7", "students:13"):  # killed mid-teacher, then mid-student; resumed each time
        kill_at(lm.main, smoke_argv(tmp_path, "--save_every", "4", "--seeds", "0,1", "--halt_at", halt,
                                    *(["--resume"] if halt != "teacher:7" else []), out="b"))
    # the rest in two worker processes: the killed job's late records are cut before any job appends
    lm.main(smoke_argv(tmp_path, "--save_every", "4", "--seeds", "0,1", "--resume", "--workers", "2", out="b"))
    a, b = (common.read_json(tmp_path / d / "results.json") for d in ("a", "b"))
    assert a["teacher"] == b["teacher"] and a["students"] == b["students"] and a["probe"] == b["probe"]
    records = lambda d: sorted(json.dumps(r, sort_keys=True) for r in common.read_jsonl(tmp_path / d / "metrics.jsonl"))
    assert records("a") == records("b")  # no record lost or repeated (their order differs with workers)


def test_torchrun_two_processes_match_one(tmp_path):
    """2 gloo processes (micro-batch 2, 2 accumulation steps each) against 1 process (micro-batch 4, 2 steps)
    with the same global batch of 8: the same teacher weights after 3 optimizer steps."""
    common_args = ["--mode", "teacher", "--teacher_steps", "3", "--ckpt_every", "1", "--eval_every", "1",
                   "--batch", "8"]
    lm.main(smoke_argv(tmp_path, *common_args, "--micro_batch", "4", out="one"))
    two = run_script(smoke_argv(tmp_path, *common_args, "--micro_batch", "2", out="two"), torchrun=2)
    assert two.returncode == 0, two.stderr + two.stdout
    assert "processes 2" in two.stdout  # torchrun's two, data parallel
    wa = common.load_checkpoint(tmp_path / "one" / "ckpt" / "teacher" / "step_000000003.pt")
    wb = common.load_checkpoint(tmp_path / "two" / "ckpt" / "teacher" / "step_000000003.pt")
    w0 = common.load_checkpoint(tmp_path / "one" / "ckpt" / "teacher" / "step_000000000.pt")
    moved = max((wa["model"][k] - w0["model"][k]).abs().max().item() for k in wa["model"])
    assert moved > 1e-3  # the weights did change
    for k in wa["model"]:
        torch.testing.assert_close(wa["model"][k], wb["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    assert wa["val_loss"] == pytest.approx(wb["val_loss"], rel=1e-5)
