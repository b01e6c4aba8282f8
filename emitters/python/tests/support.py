"""Shared by the tests: where the repository's fixtures and the converter binary are."""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
FIXTURES = os.path.join(REPO, "fixtures", "conformance")


def spanline_bin():
    """The converter: $SPANLINE_BIN, else target/debug/spanline under the repository root.
    Raises AssertionError (a test failure, never a skip) when neither exists."""
    env = os.environ.get("SPANLINE_BIN")
    candidates = [env] if env else []
    candidates.append(os.path.join(REPO, "target", "debug", "spanline"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise AssertionError(
        "the spanline converter binary was not found (tried %s): build it with `cargo build` "
        "or set SPANLINE_BIN to its path" % ", ".join(repr(c) for c in candidates))
