"""Shared by every test file. MKL is pinned before torch is imported anywhere in the test process.

The tests run on one thread: smoke models run fastest there, and exact comparisons need it (on a loaded machine a
2-thread process now and then computes slightly different numbers). The three long runs, the parity claim (about 2
minutes), the golden groups (about 45 s) and bench/gpu_check.sh's dry run (about 30 s), start in their own
one-thread processes as soon as their tests are collected, so that they use the second core while the other
tests run on the first."""
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # as the scripts do, before torch loads
import common  # noqa: E402
import pytest
import torch

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = pytest.StashKey()
# The CPU MLP preset with a shorter teacher, student budget and probe set, checkpoints every 200 steps and one lr:
# progressive at speed 2 and two_shot reach 90% by step 4200 in every seed, CE and one-shot never in 9000
# (docs/parity.md, "The claim test").
CLAIM_ARGV = ["--preset", "cpu", "--teacher_steps", "8000", "--steps", "9000", "--speed", "2", "--lr_grid", "1e-2",
              "--probe_samples", "10000", "--ckpt_every", "200", "--eval_every", "200"]
BACKGROUND = {  # fixture: (command, environment) given its output folder
    "parity_claim": lambda out: ([sys.executable, "parity.py", *CLAIM_ARGV, "--out", out], {}),
    "golden_runs": lambda out: ([sys.executable, "tests/golden/make_goldens.py", "--out", out], {}),
    # bench/gpu_check.sh's dry run: smoke presets on the CPU, without its part 1 (the tests run each bench)
    "gpu_check_dry_run": lambda out: (["bash", "bench/gpu_check.sh", out], dict(
        PYTHON=sys.executable, PRESET="smoke", DEVICE="cpu", TEACHER_STEPS="40", CAP="20", EVERY="10",
        RUNS=os.path.dirname(out), BENCHES="0")),
}


def pytest_collection_modifyitems(config, items):
    """Start the background runs that the collected tests read, and move those tests last: nothing waits."""
    reads = lambda item: bool(set(getattr(item, "fixturenames", ())) & set(BACKGROUND))
    items.sort(key=reads)  # stable: the order within each part is kept
    runs = config.stash[RUNS] = {}
    for item in items:
        skipped = any(m.args and m.args[0] is True for m in item.iter_markers("skipif"))
        for name in set(getattr(item, "fixturenames", ())) & set(BACKGROUND) - set(runs):
            if not skipped:
                folder = tempfile.mkdtemp(prefix=name + "_")
                command, env = BACKGROUND[name](os.path.join(folder, "run"))
                with open(os.path.join(folder, "log.txt"), "w") as log:
                    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                            env={**os.environ, "OMP_NUM_THREADS": "1", **env})
                runs[name] = (proc, folder)


def pytest_sessionfinish(session):
    for proc, folder in session.config.stash.get(RUNS, {}).values():
        proc.kill()  # if a test stopped the session early
        proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def finished(config, name):
    """The output folder of background run `name`, once it has exited 0."""
    proc, folder = config.stash[RUNS][name]
    code = proc.wait(timeout=1200)
    with open(os.path.join(folder, "log.txt")) as f:
        assert code == 0, f.read()[-3000:]
    return os.path.join(folder, "run")


@pytest.fixture(scope="session")
def parity_claim(request):
    """results.json of `python parity.py` with CLAIM_ARGV."""
    return common.read_json(os.path.join(finished(request.config, "parity_claim"), "results.json"))


@pytest.fixture(scope="session")
def gpu_check_dry_run(request):
    """The output folder of bench/gpu_check.sh's dry run."""
    return finished(request.config, "gpu_check_dry_run")


@pytest.fixture(scope="session")
def golden_runs(request):
    """The folder where `tests/golden/make_goldens.py --out` wrote this code's numbers of every group."""
    return finished(request.config, "golden_runs")


class Killed(BaseException):
    """What os._exit raises in a test: a run given --halt_at dies there, as a killed job would."""


@pytest.fixture
def kill_at(monkeypatch, capsys):
    """kill_at(main, argv): run main(argv), which has --halt_at, in this process until it halts."""
    def die(code):
        raise Killed(code)

    def run(main, argv):
        monkeypatch.setattr(os, "_exit", die)
        with pytest.raises(Killed):
            main(argv)
        assert "halting" in capsys.readouterr().out
    return run
