"""Splits `eventpipe-operator render` output into one file per object: core kinds
(what kubernetes-validate has schemas for) as core-<kind>-<name>.yaml, the rest
(Strimzi's KafkaTopic) as crd-<kind>-<name>.yaml; fails when a kind is missing."""
import sys

import yaml

source, out = sys.argv[1], sys.argv[2]
core = {"Deployment", "Service", "ConfigMap", "ServiceAccount"}
seen = set()
for doc in yaml.safe_load_all(open(source)):
    if not doc:
        continue
    kind, name = doc["kind"], doc["metadata"]["name"]
    seen.add(kind)
    prefix = "core" if kind in core else "crd"
    with open(f"{out}/{prefix}-{kind.lower()}-{name}.yaml", "w") as f:
        yaml.safe_dump(doc, f)
missing = core - seen
if missing:
    sys.exit(f"render produced no {', '.join(sorted(missing))}")
print(f"{len(seen)} kinds: {', '.join(sorted(seen))}")
