"""common pins MKL before torch is imported anywhere in the test process."""
import common  # noqa: F401
