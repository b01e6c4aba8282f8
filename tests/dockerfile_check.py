"""Checks examples/deploy/Dockerfile with a Dockerfile parser (the `dockerfile` package, which
wraps the official Go parser): multi-stage, the final stage a minimal base that holds the
binary only and runs it as a non-root user. Exits 1 with the reason when a rule is broken.

    python tests/dockerfile_check.py examples/deploy/Dockerfile
"""

import sys

import dockerfile


def check(path):
    cmds = dockerfile.parse_file(path)
    stages = []
    for c in cmds:
        if c.cmd == "FROM":
            stages.append([c])
        elif stages:
            stages[-1].append(c)
    problems = []
    if len(stages) < 2:
        problems.append(f"{len(stages)} stage(s): the build must be multi-stage")
        return problems
    final = stages[-1]
    base = final[0].value[0]
    if not (base.startswith("gcr.io/distroless/") or base == "scratch"):
        problems.append(f"the final stage's base {base!r} is not minimal (distroless or scratch)")
    copies = [c for c in final if c.cmd == "COPY"]
    if len(copies) != 1 or not any(f.startswith("--from=") for f in copies[0].flags):
        problems.append("the final stage must copy exactly one thing, from the build stage")
    elif copies[0].value[0] != "/src/target/release/spanline":
        problems.append(f"the final stage copies {copies[0].value[0]!r}, not the binary")
    users = [c for c in final if c.cmd == "USER"]
    if not users or users[-1].value[0].split(":")[0] in ("root", "0"):
        problems.append("the final stage must run as a non-root USER")
    entry = [c for c in final if c.cmd == "ENTRYPOINT"]
    if not entry or entry[-1].value[0] != "/spanline":
        problems.append("the entry point must be /spanline")
    if any(c.cmd in ("RUN", "ADD") for c in final):
        problems.append("the final stage must not RUN or ADD anything")
    return problems


if __name__ == "__main__":
    found = check(sys.argv[1])
    for p in found:
        print(f"{sys.argv[1]}: {p}")
    sys.exit(1 if found else 0)
