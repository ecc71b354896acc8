"""Set before torch is imported anywhere in the test process (see parity.py)."""
import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # same seed, same numbers: MKL results otherwise vary with memory alignment
