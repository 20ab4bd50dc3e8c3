#!/usr/bin/env python3
"""Static check of the Dockerfile against the workspace (no Docker engine here):

  - every `-p PACKAGE` of its `cargo build` is a package of a workspace member, and
    every workspace package with a binary target named in the image contract is built;
  - it copies exactly the contract's binaries out of target/release;
  - .dockerignore (an allow-list) lets in Cargo.toml, Cargo.lock, every workspace member
    and scripts/image-rootfs.sh, which the build needs.

usage: dockerfile_check.py REPO_ROOT
"""
import fnmatch
import pathlib
import re
import sys
import tomllib

BINARIES = ["eventpipe-operator", "producer", "feature-processor", "intervention", "dashboard"]


def main():
    root = pathlib.Path(sys.argv[1]).resolve()
    failures = []
    dockerfile = (root / "Dockerfile").read_text()
    workspace = tomllib.loads((root / "Cargo.toml").read_text())["workspace"]["members"]
    packages = {}
    for member in workspace:
        manifest = root / member / "Cargo.toml"
        if manifest.exists():
            packages[tomllib.loads(manifest.read_text())["package"]["name"]] = member
        else:
            failures.append(f"workspace member {member} has no Cargo.toml")

    built = re.findall(r"-p\s+([A-Za-z0-9_-]+)", dockerfile)
    for name in built:
        if name not in packages:
            failures.append(f"Dockerfile builds -p {name}, which is not a workspace package {sorted(packages)}")
        else:
            print(f"  ok -p {name}: workspace member {packages[name]}")
    if sorted(built) != sorted(BINARIES):
        failures.append(f"Dockerfile builds {sorted(built)}, the image contract is {sorted(BINARIES)}")

    copied = re.findall(r"target/release/([A-Za-z0-9_-]+)", dockerfile)
    if sorted(copied) != sorted(BINARIES):
        failures.append(f"Dockerfile copies {sorted(copied)} out of target/release, expected {sorted(BINARIES)}")
    else:
        print(f"  ok copies {', '.join(copied)}")

    # A minimal reading of the allow-list: '*' first, then '!path' exceptions.
    rules = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]

    def admitted(path):
        keep = True
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule[1:] if negate else rule
            pattern = pattern.rstrip("/")
            if pattern.startswith("**/"):
                tail = pattern[3:]
                parts = path.split("/")
                hit = any(fnmatch.fnmatch("/".join(parts[i:j]), tail)
                          for i in range(len(parts)) for j in range(i + 1, len(parts) + 1))
            else:
                hit = fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/")
            if hit:
                keep = negate
        return keep

    for path in ["Cargo.toml", "Cargo.lock", "scripts/image-rootfs.sh"] + [f"{m}/Cargo.toml" for m in workspace]:
        if admitted(path):
            print(f"  ok .dockerignore admits {path}")
        else:
            failures.append(f".dockerignore keeps {path} out of the build context")
    for path in ["target/release/producer", "services/producer/target/debug/producer", "docs/dashboard.png",
                 ".git/HEAD"]:
        if admitted(path):
            failures.append(f".dockerignore lets {path} into the build context")

    for f in failures:
        print(f"  FAIL {f}")
    if failures:
        sys.exit(1)
    print("  dockerfile: no failures")


if __name__ == "__main__":
    main()
