"""Tests of pcfg.py: grammars, sampler, masking, boundary labels, model masks, schedules, probes, phases,
faults, resume, and smoke runs of every mode for both objectives."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import common
import pcfg
from test_bench import numbers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def args_for(*argv):
    return pcfg.parse_args(["--out", "/nonexistent/unused", *argv])


def run_cli(*argv, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, "pcfg.py"), *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------------------------------------------- grammars

def test_grammars_have_the_official_rule_counts_and_probabilities():
    counts = {name: sum(len(a) for a in pcfg.grammar(name)["rules"].values()) for name in pcfg.GRAMMARS}
    assert counts == {"cfg3b": 31, "cfg3f": 54, "cfg3g": 48, "cfg3h": 39, "cfg3i": 32}
    assert pcfg.uniform_probs(2) == [0.5, 0.5]
    assert pcfg.uniform_probs(3)[:2] == [0.333, 0.333] and abs(pcfg.uniform_probs(3)[2] - 0.334) < 1e-12
    assert pcfg.uniform_probs(4) == [0.25] * 4
    g = pcfg.grammar("cfg3b")
    assert g["rules"]["s"] == [["r", "q"], ["q", "p"]] and g["rules"]["f"] == [["c", "b", "a"]]
    assert g["max_len"] == 432  # longest possible cfg3b sentence (161..432)
    assert g["longest_at"] == [432, 216, 72, 27, 9, 3, 1]  # longest span of a node at each depth


def parse_back(g, tokens, anc, ends, top=0):
    """Rebuild the tree of one sentence (or of one depth-`top` subtree) from its ancestor table: the depth-d
    spans end where ends[:, d]; each span's children (the depth-d+1 spans inside it) must be a right-hand
    side of its symbol."""
    D = anc.shape[1]
    assert (anc[:, top] == anc[0, top]).all() and ends[-1, top:].all() and ends[:, D - 1].all()
    assert top > 0 or anc[0, 0] == pcfg.SYMBOLS.index("s")
    assert not ends[:-1, top].any()  # one whole span, nothing cut off
    spans = [[]] * top
    for d in range(top, D):
        cuts = np.flatnonzero(ends[:, d]) + 1
        starts = np.concatenate([[0], cuts[:-1]])
        spans.append(list(zip(starts, cuts)))
        for a, b in spans[d]:
            assert (anc[a:b, d] == anc[a, d]).all()  # one ancestor per span
    for d in range(top, D - 1):
        for a, b in spans[d]:
            kids = [pcfg.SYMBOLS[anc[x, d + 1]] for x, y in spans[d + 1] if a <= x and y <= b]
            assert kids in g["rules"][pcfg.SYMBOLS[anc[a, d]]]
    for x, (a, b) in enumerate(spans[D - 1]):  # preterminal -> its own token
        assert b - a == 1 and tokens[a] == pcfg.TOKENS[pcfg.SYMBOLS[anc[a, D - 1]]]


@pytest.mark.parametrize("name", sorted(pcfg.GRAMMARS))
def test_every_sampled_sentence_parses_back_under_its_grammar(name):
    g = pcfg.grammar(name)
    s = pcfg.sample_sentences(g, 100, pcfg.rng_for(0, 9))
    for i in range(100):
        a, b = s["offsets"][i], s["offsets"][i + 1]
        parse_back(g, s["tokens"][a:b], s["anc"][a:b], s["ends"][a:b])


@pytest.mark.parametrize("name,depth", [("cfg3b", 3), ("cfg3f", 2)])
def test_every_sampled_subtree_is_a_whole_derivation_of_its_root(name, depth):
    g = pcfg.grammar(name)
    ids, anc, ends = pcfg.sample_batch(g, 200, pcfg.rng_for(0, 9), 0, depth)
    assert (ids[:, 0] == pcfg.BOS).all() and ids.shape[1] <= g["longest_at"][depth] + 1
    lengths = []
    for i in range(200):
        real = anc[i, :, 0] >= 0
        assert real[1:real.sum() + 1].all()  # [BOS], the span, then PAD only
        parse_back(g, ids[i][real].numpy(), anc[i][real].numpy(), ends[i][real].numpy(), top=depth)
        lengths.append(int(real.sum()))
    assert len(set(lengths)) > 3 and len({int(a) for a in anc[:, 1, depth]}) > 1  # random nodes, not one


def test_the_cpu_presets_training_subtrees_parse_back_under_cfg3b(tmp_path):
    """The cpu preset trains on whole depth-2 subtrees of cfg3b: every sequence of a teacher and a student batch is
    [BOS] and one derivation of its depth-2 root under the grammar, then padding."""
    args = pcfg.parse_args(["--out", str(tmp_path)])
    assert (args.grammar, args.subtree, args.crop) == ("cfg3b", 2, 0)
    g, roots = pcfg.grammar("cfg3b"), set()
    for stream in (1, 2):  # the teacher's batch, the students'
        ids, anc, ends = pcfg.train_batch(args, 0, stream, 0)
        assert len(ids) == (args.teacher_batch if stream == 1 else args.batch) and (ids[:, 0] == pcfg.BOS).all()
        for i in range(len(ids)):
            real = anc[i, :, 0] >= 0
            assert real[1:real.sum() + 1].all()  # [BOS], the subtree, then PAD only
            parse_back(g, ids[i][real].numpy(), anc[i][real].numpy(), ends[i][real].numpy(), top=2)
            roots.add(int(anc[i, 1, 2]))
    assert len(roots) > 1  # subtrees of several depth-2 symbols


def test_sentence_lengths_match_the_grammar():
    s = pcfg.sample_sentences(pcfg.grammar("cfg3b"), 4000, pcfg.rng_for(1, 9))
    lengths = np.diff(s["offsets"])
    assert 161 <= lengths.min() and lengths.max() <= 432
    assert abs(lengths.mean() - 294.0) < 3  # analytic E[len] = 294.0; SE about 1


def test_crops_and_whole_sentences_keep_tokens_and_annotations_aligned():
    g = pcfg.grammar("cfg3f")
    ids, anc, ends = pcfg.sample_batch(g, 50, pcfg.rng_for(0, 8), 0)
    assert (ids[:, 0] == pcfg.BOS).all() and (anc[:, 0] == -1).all() and not ends[:, 0].any()
    pad = ids == pcfg.PAD
    assert (anc[pad] == -1).all() and not ends[pad].any()
    real = anc[..., 0] >= 0
    assert (ids[real] < 3).all() and (ids[real] == torch.from_numpy(g["token_of"])[anc[real][:, 6]]).all()
    ids2, anc2, _ = pcfg.sample_batch(g, 50, pcfg.rng_for(0, 8), 16)  # same sentences, random windows
    assert ids2.shape == (50, 16)
    for i in range(50):
        row = ids[i][ids[i] != pcfg.PAD].tolist()
        crop = ids2[i].tolist()
        assert any(row[k:k + 16] == crop for k in range(len(row) - 15))


def test_cached_training_data_equals_the_on_the_fly_stream(tmp_path):
    args = pcfg.parse_args(["--preset", "smoke", "--out", str(tmp_path), "--cache_data", "1"])
    cached = pcfg.train_batch(args, 0, 2, 7)
    args.cache_data = 0
    fresh = pcfg.train_batch(args, 0, 2, 7)
    assert all(torch.equal(a, b) for a, b in zip(cached, fresh))
    assert os.listdir(tmp_path / "data")


# ---------------------------------------------------------------------------------------------------- targets

def test_masking_proportions_and_key_hiding():
    ids = torch.randint(0, 3, (400, 100))
    ids[:, 90:] = pcfg.PAD
    can = ids != pcfg.PAD
    gen = torch.Generator().manual_seed(0)
    x, y, km = pcfg.mask_tokens(ids, gen, 0.3, pcfg.MASK, pcfg.TERMINAL_IDS, can)
    sel = y != -100
    assert not sel[:, 90:].any() and not km[:, 90:].any()
    assert abs(sel[can].float().mean().item() - 0.3) < 0.01
    assert (y[sel] == ids[sel]).all()
    n = sel.sum().item()
    masked = (x == pcfg.MASK) & sel
    changed = (x != ids) & (x != pcfg.MASK) & sel
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    # random replacement: 10%, of which 1/3 draws the same token back (BERT's rule), so 2/3 x 10% change
    assert abs(changed.sum().item() / n - 0.1 * 2 / 3) < 0.01
    assert (x[~sel] == ids[~sel]).all()
    assert torch.equal(km, can & ~sel)  # every selected position is hidden as a key
    _, _, km2 = pcfg.mask_tokens(ids, torch.Generator().manual_seed(0), 0.3, pcfg.MASK, pcfg.TERMINAL_IDS, can,
                                 hide_selected=False)
    assert torch.equal(km2, can)


TINY = """
s -> p q
p -> m n
q -> m
m -> j
n -> j j
j -> g
g -> d
d -> a b"""


def test_boundary_labels_sit_exactly_at_span_ends(monkeypatch):
    """A hand-built tree: s[ p[ m[j..(a b)] n[ j..(a b) j..(a b) ] ] q[ m[j..(a b)] ] ], tokens a b a b a b a b.
    Spans end at token 5, 7 (depth 1: p, q), 1, 5, 7 (depth 2: m, n, m), 1, 3, 5, 7 (depth 3: the j's)."""
    monkeypatch.setitem(pcfg.GRAMMARS, "tiny", TINY)
    pcfg.grammar.cache_clear()
    try:
        g = pcfg.grammar("tiny")
        s = pcfg.sample_sentences(g, 1, pcfg.rng_for(0, 0))
        parse_back(g, s["tokens"], s["anc"], s["ends"])
        assert s["tokens"].tolist() == [0, 1] * 4
        ids, anc, ends = pcfg.sample_batch(g, 1, pcfg.rng_for(0, 0), 0)
        expect = {1: [5, 7], 2: [1, 5, 7], 3: [1, 3, 5, 7], 0: [7]}
        for level, tokens in expect.items():
            t = pcfg.boundary_targets(ids, ends, level)[0]
            # the token at sequence position i+1 (token index i) is predicted at output position i
            assert torch.nonzero(t != -100).flatten().tolist() == tokens
            assert t[t != -100].tolist() == [1] * len(tokens)
    finally:
        pcfg.grammar.cache_clear()


def test_heldout_sentences_never_appear_in_training():
    args = args_for("--objective", "boundary", "--preset", "smoke", "--crop", "0", "--max_len", "1024")
    held, _, _ = pcfg.fixed_set(args, 3, 256)
    key = lambda row: tuple(row[row != pcfg.PAD].tolist())
    heldout = {key(r) for r in held}
    assert len(heldout) == 256
    for stream in (1, 2):
        for step in range(20):
            ids, _, _ = pcfg.train_batch(args, 0, stream, step)
            assert not heldout & {key(r) for r in ids}


def test_heldout_set_never_meets_the_training_streams_at_the_cpu_preset(tmp_path):
    """The cpu preset trains on depth-2 subtrees, which repeat: a plain draw of held-out subtrees meets the
    training streams (161 of 1024 at the full preset); the held-out set drops those. Checked against the streams
    regenerated batch by batch, with the preset's sequences, batches and seeds, over fewer steps."""
    args = pcfg.parse_args(["--preset", "cpu", "--teacher_steps", "40", "--budgets", "40", "--ckpt_every", "10",
                            "--eval_size", "256", "--out", str(tmp_path)])
    key = lambda row: tuple(row[row != pcfg.PAD].tolist())
    train = set()
    for seed, stream in [(args.teacher_seed, 1)] + [(s, 2) for s in args.seed_list]:
        for step in range(40):
            train |= {key(r) for r in pcfg.train_batch(args, seed, stream, step)[0]}
    held = pcfg.heldout_set(args)
    assert held["ids"].shape[0] == 256 and not {key(r) for r in held["ids"]} & train
    plain = pcfg.sample_for(args, 256, pcfg.rng_for(12345, 3))[0]  # the held-out set before the fix
    assert held["overlapping_in_first_draw"] == sum(key(r) in train for r in plain) > 0


# ---------------------------------------------------------------------------------------------------- model

def test_hidden_keys_do_not_reach_other_positions_and_all_hidden_rows_are_finite():
    torch.manual_seed(0)
    m = pcfg.Encoder(8, 16, 2, 2, 4).eval()
    ids = torch.randint(0, 3, (2, 10))
    km = torch.ones(2, 10, dtype=torch.bool)
    km[:, 4] = False
    out = m(ids, km)
    ids2 = ids.clone()
    ids2[:, 4] = 2 - ids2[:, 4]
    out2 = m(ids2, km)
    others = [i for i in range(10) if i != 4]
    assert torch.allclose(out[:, others], out2[:, others], atol=1e-6)
    assert not torch.allclose(out[:, 4], out2[:, 4])  # its own residual stream still sees it
    assert torch.isfinite(m(ids, torch.zeros_like(km))).all()
    logits, hidden = m(ids, None, return_hidden=True)
    assert logits.shape == (2, 10, 8) and hidden.shape == (2, 10, 8)


def test_causal_model_never_sees_the_future():
    torch.manual_seed(0)
    m = pcfg.Encoder(8, 16, 2, 2, 4, causal=True).eval()
    ids = torch.randint(0, 3, (3, 12))
    for t in (3, 7, 11):
        ids2 = ids.clone()
        ids2[:, t:] = (ids2[:, t:] + 1) % 3
        for km in (None, torch.ones(3, 12, dtype=torch.bool)):
            a, b = m(ids, km), m(ids2, km)
            assert torch.allclose(a[:, :t], b[:, :t], atol=1e-6)
            assert not torch.allclose(a[:, t:], b[:, t:])


# ---------------------------------------------------------------------------------------------------- schedules

def test_teacher_checkpoint_schedule():
    saved = [0, 25, 50, 75, 100, 125, 150]
    f = lambda t, saved, refresh, speed: common.progressive_ckpt(t, saved, speed, refresh)
    # speed 1, refresh 50: steps [0, 50) use the latest saved <= 50, [50, 100) <= 100, ...
    assert [f(s, saved, 50, 1) for s in (0, 49, 50, 99, 100, 149, 1000)] == [50, 50, 100, 100, 150, 150, 150]
    assert [f(s, saved, 25, 2) for s in (0, 24, 25, 50)] == [50, 50, 100, 150]  # twice as fast
    assert f(0, [0, 40, 80], 30, 1) == 0  # latest saved <= 30 is the step-0 checkpoint
    assert all(f(s, saved, 25, math.inf) == 150 for s in (0, 10, 200))  # one-shot: the final one
    with pytest.raises(ValueError):
        f(0, [100, 200], 50, 1)  # without a step-0 checkpoint nothing precedes the first target
    args = args_for("--preset", "smoke", "--T", "20", "--budgets", "40", "--speed", "1")
    assert [pcfg.schedule_for("two_shot", s, saved, args, 40, stage1=25) for s in (0, 19, 20, 39)] == [25, 25, 150, 150]
    assert pcfg.horizon_steps(saved, args, 100) == [0, 25, 50, 75, 100]


def test_phases_of_a_synthetic_three_phase_curve():
    steps = list(range(0, 1501, 25))
    loss = [2.0 if s == 0 else 1.05 - 0.0001 * s if s < 300 else max(0.4, 1.02 - 0.004 * (s - 300)) - 0.00005 * s
            for s in steps]
    ph = pcfg.loss_phases(steps, loss)
    assert 25 <= ph["plateau_start"] <= 100 and 250 <= ph["drop_start"] <= 325 and 425 <= ph["drop_end"] <= 500
    assert 300 <= ph["inflection"] <= 450
    assert abs(ph["slopes"]["drop"]) > 3 * abs(ph["slopes"]["plateau"])


def test_mrobust_checks_read_the_peak_against_the_drop_and_the_loss():
    steps = [0, 100, 200, 300, 400, 500]
    res = {"teacher": {"steps": steps, "val_loss": [2.0, 1.0, 0.8, 0.5, 0.3, 0.2]},
           "phases": {"drop_start": 100, "drop_end": 300, "slopes": {"plateau": 0, "drop": -1, "decay": 0}},
           "probe": {"steps": steps, "m_robust": {"3gram": {"l1": {"median": [0, 0.1, 0.6, 0.4, 0.2, 0.03]}}}}}
    c = pcfg.claim_checks(res, pcfg.parse_args(["--preset", "smoke"]))
    assert c["mrobust_peak_step"] == 200 and c["mrobust_peak_in_drop"] and c["mrobust_peak_loss"] == 0.8
    assert c["drop_end_loss"] == 0.5 and c["mrobust_peak_over_final"] == pytest.approx(20) and c["mrobust_falls_10x"]
    res["probe"]["m_robust"]["3gram"]["l1"]["median"][4] = 0.7  # the maximum after the drop's end
    c = pcfg.claim_checks(res, pcfg.parse_args(["--preset", "smoke"]))
    assert c["mrobust_peak_step"] == 400 and not c["mrobust_peak_in_drop"] and c["mrobust_peak_loss"] == 0.3


# ---------------------------------------------------------------------------------------------------- probes

class LooksTwoBack(nn.Module):
    """Predicts, at every position t, the token at t-2 if that key is visible and not [MASK]; else uniform."""

    def forward(self, ids, key_mask=None):
        key_mask = torch.ones_like(ids, dtype=torch.bool) if key_mask is None else key_mask
        prev = torch.roll(ids, 2, dims=1)
        seen = torch.roll(key_mask, 2, dims=1) & (prev != pcfg.MASK)
        seen[:, :2] = False
        onehot = torch.nn.functional.one_hot(prev.clamp(max=7), 8).float() * 50
        return torch.where(seen[..., None], onehot, torch.zeros_like(onehot))


def test_ngram_probe_on_a_model_whose_answer_is_known():
    ids = torch.randint(0, 3, (6, 20))
    km = torch.ones_like(ids, dtype=torch.bool)
    windows = {"3gram": (1, 1), "5gram": (2, 2), "4gram": (2, 1), "2gram": (1, 0)}
    r = pcfg.ngram_probe(LooksTwoBack(), ids, km, [5, 10, 15], windows, pcfg.MASK)
    full = 2 * 7 / 8  # ||uniform over 8 - one-hot||_1
    assert all(r[name]["count"] == 18 for name in windows)
    for name, (left, right) in windows.items():
        removes = left >= 2  # the window covers t-2: masking it removes the evidence (robust), keeping it keeps it
        rob, close = r[name]["robust"]["l1"]["median"], r[name]["close"]["l1"]["median"]
        assert rob == pytest.approx(full if removes else 0, abs=1e-4)
        assert close == pytest.approx(0 if removes else full, abs=1e-4)
        assert r[name]["robust"]["tv"]["median"] == pytest.approx(rob / 2, abs=1e-6)
        assert r[name]["robust"]["l1"]["q25"] <= rob <= r[name]["robust"]["l1"]["q75"]
    short = km.clone()
    short[:3, 12:] = False  # three sequences end before p = 15: skipped there
    assert pcfg.ngram_probe(LooksTwoBack(), ids, short, [5, 10, 15], windows, pcfg.MASK)["2gram"]["count"] == 15


def test_nt_probe_reads_features_that_encode_the_answer():
    g = torch.Generator().manual_seed(0)
    labels = torch.stack([torch.randint(0, k, (600,), generator=g) for k in (1, 3, 3)], 1)
    onehots = torch.cat([torch.nn.functional.one_hot(labels[:, k], n).float() for k, n in enumerate((1, 3, 3))], 1)
    feats = torch.cat([onehots, torch.randn(600, 5, generator=g)], 1)
    acc = pcfg.nt_probe(feats[:400], labels[:400], feats[400:], labels[400:], [1, 3, 3], steps=150)
    assert acc == [1.0, 1.0, 1.0]
    noise = torch.randn(600, 8, generator=g)
    acc = pcfg.nt_probe(noise[:400], labels[:400], noise[400:], labels[400:], [1, 3, 3], steps=150)
    assert acc[0] == 1.0 and max(acc[1:]) < 0.5  # chance is 1/3


# ---------------------------------------------------------------------------------------------------- faults

@pytest.mark.parametrize("argv, flag", [
    (["--probe_positions", "15"], "--windows"),  # the smoke crop is 16 tokens: a window right of 15 leaves it
    (["--probe_positions", "20"], "--probe_positions"),
    (["--windows", "wide:9:1"], "--windows"),
    (["--budgets", "20,80"], "--budgets"),
    (["--teacher_dir", "/nonexistent/teacher"], "--teacher_dir"),
    (["--level", "0", "--objective", "boundary"], "--level"),
    (["--lr_grid", "1e-3,-1"], "--lr_grid"),
    (["--max_len", "8"], "--max_len"),
    (["--ckpt", "15"], "--ckpt"),
    (["--refresh", "0"], "--refresh"),
    (["--refresh", "soon"], "--refresh"),
    (["--two_shot_sweep", "late"], "--two_shot_sweep"),
    (["--subtree", "7"], "--subtree"),  # cfg3b has depths 0..6
    (["--subtree", "3"], "--crop"),  # whole subtrees, not crops of them
    (["--subtree", "3", "--crop", "0", "--max_len", "20"], "--max_len"),  # depth-3 spans reach 27 tokens
])
def test_bad_input_names_the_flag_exits_2_and_writes_nothing(tmp_path, capsys, argv, flag):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        pcfg.main(["--preset", "smoke", "--out", str(out), *argv])
    assert e.value.code == 2
    assert flag in capsys.readouterr().err
    assert not out.exists()


def test_cpu_boundary_preset_refuses_the_levels_its_teacher_lr_cannot_learn(tmp_path, capsys):
    """At the preset's teacher lr (3e-3) the level-1 and level-2 teachers collapse to a constant (README): refused,
    naming the flag values that work; a teacher lr given by hand is accepted."""
    for level in ("1", "2", "1,2,3"):
        with pytest.raises(SystemExit) as e:
            pcfg.main(["--objective", "boundary", "--level", level, "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "--level" in err and "--teacher_lr 1e-3" in err and "--level 3" in err
        assert not (tmp_path / "run").exists()
    for lr in ("1e-3", "3e-3"):  # asked for by hand (the README's collapse study): accepted
        assert pcfg.parse_args(["--objective", "boundary", "--level", "1,2", "--teacher_lr", lr,
                                "--out", str(tmp_path / "ok")]).level_list == [1, 2]


def test_unknown_grammar_exits_2_from_the_command_line(tmp_path):
    r = run_cli("--preset", "smoke", "--grammar", "cfg9z", "--threads", "1", "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "--grammar" in r.stderr
    assert not (tmp_path / "run").exists()


def test_every_float_flag_refuses_nan_and_inf(tmp_path, capsys):
    out = tmp_path / "run"
    floats = [a.option_strings[0] for a in pcfg.build_parser()._actions if a.type is float]
    assert {"--teacher_lr", "--temperature", "--speed", "--clip", "--mask_rate"} <= set(floats)
    for flag in floats + ["--lr_grid", "--betas"]:
        for bad in ("nan", "inf"):
            value = {"--lr_grid": f"1e-2,{bad}", "--betas": f"0.9,{bad}"}.get(flag, bad)
            with pytest.raises(SystemExit) as e:
                pcfg.main(["--preset", "smoke", "--out", str(out), flag, value])
            assert e.value.code == 2 and f"error: {flag}: " in capsys.readouterr().err, (flag, value)
    assert not out.exists()


def test_teacher_dir_made_for_other_sizes_is_refused(tmp_path, capsys):
    pcfg.main(["--preset", "smoke", "--mode", "teacher", "--out", str(tmp_path / "t")])
    with pytest.raises(SystemExit) as e:
        pcfg.main(["--preset", "smoke", "--mode", "ce", "--teacher_heads", "2", "--teacher_dir", str(tmp_path / "t"),
                   "--out", str(tmp_path / "s")])
    assert e.value.code == 2 and "teacher_heads" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_nan_stops_the_run_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        pcfg.main(["--preset", "smoke", "--mode", "teacher", "--teacher_lr", "1e30", "--clip", "0",
                   "--out", str(tmp_path / "nan")])
    assert e.value.code == 3 and "nan" in capsys.readouterr().err.lower()


# ---------------------------------------------------------------------------------------------------- end to end

def test_a_reused_teacher_keeps_its_own_training_flags_in_the_results(tmp_path, capsys):
    pcfg.main(["--preset", "smoke", "--mode", "teacher", "--teacher_lr", "2e-3", "--out", str(tmp_path / "t")])
    saved = pcfg.main(["--preset", "smoke", "--mode", "probe", "--teacher_dir", str(tmp_path / "t"),
                       "--out", str(tmp_path / "p")])
    assert saved["teacher_config"]["teacher_lr"] == 2e-3 and saved["config"]["teacher_lr"] == 3e-3
    assert "trained with --teacher_lr 0.002" in capsys.readouterr().out


def test_refresh_auto_and_the_sweep_match_students_trained_by_hand(tmp_path):
    """--refresh auto resolves to the inflection of the teacher's loss (the paper's R = 1000 is its C1, Fig. 4);
    --two_shot_sweep drop trains the drop's ends; with one lr the sweep joins the smallest budget's groups. Each
    student equals the one trained alone with those flags given by hand."""
    base = ["--preset", "smoke", "--teacher_steps", "200", "--budgets", "100", "--seeds", "0", "--lr", "3e-3",
            "--probe_every", "10"]  # the probe does not enter the refresh or the sweep
    teacher = str(tmp_path / "teacher")
    pcfg.main(base + ["--mode", "teacher", "--out", teacher])
    auto = pcfg.main(base + ["--refresh", "auto", "--two_shot_sweep", "drop", "--teacher_dir", teacher,
                             "--out", str(tmp_path / "auto")])
    ph = auto["phases"]
    assert ph is not None and auto["refresh"] == ph["inflection"] and "inflection" in auto["refresh_rule"]
    hand = pcfg.main(base + ["--mode", "progressive", "--refresh", str(ph["inflection"]), "--teacher_dir", teacher,
                             "--out", str(tmp_path / "hand")])
    assert "refresh" not in hand and hand["students"]["progressive"] == auto["students"]["progressive"]
    stage1s = sorted({ph["drop_start"], ph["drop_end"]} - {auto["two_shot_ckpt"]})
    assert stage1s and [r["stage1"] for r in auto["two_shot_sweep"]] == stage1s
    for row in auto["two_shot_sweep"]:
        alone = pcfg.main(base + ["--mode", "two_shot", "--ckpt", str(row["stage1"]), "--teacher_dir", teacher,
                                  "--out", str(tmp_path / f"alone{row['stage1']}")])
        assert alone["students"]["two_shot"][0]["acc"] == row["acc"]


def test_ce_needs_no_teacher(tmp_path):
    saved = pcfg.main(["--preset", "smoke", "--mode", "ce", "--seeds", "0", "--out", str(tmp_path / "ce")])
    assert "teacher" not in saved and len(saved["students"]["ce"]) == 2


def test_resume_after_a_kill_gives_the_same_results(tmp_path, kill_at):
    base = ["--preset", "smoke", "--budgets", "40", "--seeds", "0", "--lr", "3e-3", "--two_shot_sweep", "none",
            "--probe_every", "2", "--threads", "1"]
    whole = pcfg.main(base + ["--out", str(tmp_path / "whole")])
    for halt in ("teacher:23", "students:27"):
        out = str(tmp_path / halt.split(":")[0])
        kill_at(pcfg.main, base + ["--out", out, "--halt_at", halt])
        with pytest.raises(SystemExit):  # without --resume an existing run is never overwritten
            pcfg.main(base + ["--out", out])
        resumed = pcfg.main(base + ["--out", out, "--resume"])
        assert resumed["students"] == whole["students"]
        assert resumed["teacher"]["val_loss"] == whole["teacher"]["val_loss"]
        assert resumed["probe"]["nt"] == whole["probe"]["nt"]


def test_cpu_presets_are_valid_and_every_probe_position_lands_inside_every_subtree(tmp_path):
    """The default study: whole depth-2 subtrees fit --max_len, and each probe window (up to 2 tokens either
    side) lies inside even the shortest subtree, so every sequence counts at every position."""
    for objective in ("mlm", "boundary"):
        pcfg.parse_args(["--objective", objective, "--out", str(tmp_path / objective)])
    args = pcfg.parse_args(["--out", str(tmp_path / "mlm")])
    assert (args.crop, args.subtree) == (0, 2)
    ids, anc, _ = pcfg.sample_for(args, 2000, np.random.default_rng(0))
    length = (ids != pcfg.PAD).sum(1)
    assert ids.shape[1] <= args.max_len and int(length.min()) > max(args.position_list) + 2
    assert bool((anc[:, 1:, 2] == anc[:, 1:2, 2]).where(ids[:, 1:] != pcfg.PAD, True).all())  # one depth-2 root


def test_teacher_and_students_draw_batches_of_their_own_size(tmp_path):
    args = pcfg.parse_args(["--preset", "smoke", "--teacher_batch", "5", "--batch", "3", "--out", str(tmp_path)])
    level = args.level_list[0]
    assert pcfg.batch_for(args, 0, 1, 0, level)[0].shape[0] == 5  # stream 1: the teacher's
    assert pcfg.batch_for(args, 0, 2, 0, level)[0].shape[0] == 3  # stream 2: the students'


def test_paper_presets_build_and_take_their_first_steps_on_cpu(tmp_path):
    """The paper's models and schedules, a step cap, and a tiny batch and eval set so that it fits a test."""
    small = ["--device", "cpu", "--max_steps", "2", "--batch", "2", "--teacher_batch", "2", "--eval_size", "4",
             "--eval_every", "1"]
    t = pcfg.main(["--preset", "paper", "--mode", "teacher", *small, "--out", str(tmp_path / "t")])
    assert t["teacher"]["steps"] == [0, 2]
    s = pcfg.main(["--preset", "paper", "--mode", "progressive", *small, "--teacher_dir", str(tmp_path / "t"),
                   "--budgets", "2", "--seeds", "0", "--lr", "5e-3", "--out", str(tmp_path / "s")])
    assert len(s["students"]["progressive"]) == 1
    args = pcfg.parse_args(["--preset", "paper", "--objective", "boundary", "--out", str(tmp_path / "b")])
    model = pcfg.make_model(args, "teacher", 0)
    assert sum(p.numel() for p in model.parameters()) > 3e6 and model.causal  # 4 layers x 256 wide


def test_bench_and_the_reference_bench_run_without_the_references_installed(capsys):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    import pcfg_bench
    import references as bench_references
    pcfg_bench.main(["--preset", "smoke", "--bench_steps", "2"])
    bench_references.main(["--preset", "smoke", "--bench_steps", "2"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    a = pcfg_bench.parse_args(["--preset", "smoke"])
    sampler = [numbers(x)[-2:] for x in lines if x.startswith(f"sampler ({a.grammar}")]  # sentences/s, M tokens/s
    assert len(sampler) == 2 and a.grammar == "cfg3b"
    for sentences, million in sampler:  # tokens per sentence: cfg3b's mean length is 294 (161 to 432)
        assert 250 < (million + 0.05) * 1e6 / sentences and (million - 0.05) * 1e6 / sentences < 340
    for role, batch in (("teacher", a.teacher_batch), ("student", a.batch)):  # smoke crops of 16: no padding
        rows, length, tokens, steps = numbers(next(x for x in lines if x.startswith(f"{role} train step (mlm")))
        assert (rows, length) == (batch, a.crop) and tokens == pytest.approx(steps * batch * a.crop, rel=2e-3)
        assert numbers(next(x for x in lines if x.startswith(f"{role}: ours")))[0] > 0
    assert numbers(next(x for x in lines if x.startswith("teacher forward on student batches")))[0] > 0
    assert "nltk recursive sampler:" in out  # a ratio when nltk is installed, else a line saying it was skipped
    assert out.count("transformers") >= 2  # the same for the teacher and the student encoder
    args = pcfg_bench.parse_args(["--objective", "boundary", "--level", "1"])  # the cpu preset: a bench times
    assert args.level_list == [1]  # steps, so the study's refusal of levels 1-2 at the cpu lr does not apply
