#!/usr/bin/env python3
"""Static checks of the YAML that ships the project to Kubernetes, run by check-k8s.sh.

  parse      every *.yaml / *.yml under k8s/ and charts/ (and kind-config.yaml) parses,
             all documents, except chart templates, which are Go templates until Helm
             renders them. The two RBAC templates are the exception to the exception:
             they must parse as YAML unrendered, with plain `rules:` (no template
             expression, no wildcard), because a Rust test reads those rules and
             compares them with the operator's code.
  validate   the objects of core Kubernetes kinds under k8s/ (and the charts' crds/,
             which Helm applies unrendered) pass
             `kubernetes-validate --strict` for every Kubernetes version in K8S_VERSIONS;
             objects of custom kinds (Strimzi's Kafka, KafkaNodePool, KafkaTopic; our
             EventPipeline) are listed as skipped, since kubernetes-validate has no schema
             for them and would only warn. A canary (a Namespace with an unknown field)
             must be rejected, so a validator that accepts everything fails the check.

usage: k8s_manifests.py parse|validate REPO_ROOT
"""
import pathlib
import subprocess
import sys
import tempfile

import yaml

# The oldest Kubernetes the kind setup supports (Strimzi >= 0.51 needs 1.30) and the
# newest that kubernetes-validate knows.
K8S_VERSIONS = ["1.30.0", "latest"]
RBAC_TEMPLATES = ["templates/clusterrole.yaml", "templates/role.yaml"]


def yaml_files(root, top):
    base = root / top
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def is_template(root, path):
    rel = path.relative_to(root).parts
    return len(rel) >= 3 and rel[0] == "charts" and "templates" in rel[2:]


def load_all(path):
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def contains_template(value):
    if isinstance(value, str):
        return "{{" in value
    if isinstance(value, dict):
        return any(contains_template(k) or contains_template(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_template(v) for v in value)
    return False


def parse(root):
    failures = []
    parsed = 0
    extra = [root / "kind-config.yaml"] if (root / "kind-config.yaml").exists() else []
    for top in ("k8s", "charts", None):
        for path in yaml_files(root, top) if top else extra:
            rel = path.relative_to(root)
            if is_template(root, path):
                print(f"  skip (Go template; rendered by helm lint) {rel}")
                continue
            try:
                docs = load_all(path)
            except yaml.YAMLError as e:
                failures.append(f"{rel}: {e}")
                continue
            parsed += 1
            print(f"  ok {rel}: {len(docs)} document(s)")
    for chart in sorted((root / "charts").glob("*/Chart.yaml")):
        for name in RBAC_TEMPLATES:
            path = chart.parent / name
            rel = path.relative_to(root)
            if not path.exists():
                failures.append(f"{rel}: missing")
                continue
            try:
                docs = load_all(path)
            except yaml.YAMLError as e:
                failures.append(f"{rel}: must parse as YAML before rendering (quote template expressions): {e}")
                continue
            roles = [d for d in docs if d.get("kind") in ("ClusterRole", "Role")]
            if not roles:
                failures.append(f"{rel}: no ClusterRole/Role document")
            for role in roles:
                rules = role.get("rules") or []
                if not rules:
                    failures.append(f"{rel}: {role['kind']} has no rules")
                if contains_template(rules):
                    failures.append(f"{rel}: {role['kind']} rules contain a template expression")
                for rule in rules:
                    if "*" in rule.get("verbs", []) or "*" in rule.get("resources", []):
                        failures.append(f"{rel}: wildcard in {rule}")
            parsed += 1
            print(f"  ok {rel}: parses unrendered, {sum(len(r.get('rules', [])) for r in roles)} plain rule(s)")
    return parsed, failures


def is_core(api_version):
    """Core API groups: the legacy group (v1) and the groups Kubernetes itself serves."""
    if "/" not in api_version:
        return True
    group = api_version.split("/", 1)[0]
    return "." not in group or group.endswith(".k8s.io")


def validate(root):
    failures = []
    core = []
    crds = sorted(p for p in (root / "charts").glob("*/crds/*") if p.suffix in (".yaml", ".yml"))
    for path in yaml_files(root, "k8s") + crds:
        rel = path.relative_to(root)
        try:
            docs = load_all(path)
        except yaml.YAMLError as e:
            failures.append(f"{rel}: {e}")
            continue
        for i, doc in enumerate(docs):
            what = f"{rel}#{i} {doc.get('apiVersion')} {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
            if is_core(str(doc.get("apiVersion", ""))):
                core.append((what, doc))
            else:
                print(f"  skip (custom kind, no schema in kubernetes-validate) {what}")
    if not core:
        failures.append("no object of a core kind found under k8s/")
        return 0, failures
    with tempfile.TemporaryDirectory() as tmp:
        # The validator must reject what it should: an unknown field under --strict.
        canary = pathlib.Path(tmp) / "canary.yaml"
        canary.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: canary\nspec:\n  bogus: 1\n")
        if subprocess.run(["kubernetes-validate", "--strict", "--quiet", str(canary)], capture_output=True).returncode == 0:
            failures.append("kubernetes-validate --strict accepted a Namespace with an unknown field")
        files = []
        for n, (what, doc) in enumerate(core):
            f = pathlib.Path(tmp) / f"{n:03d}.yaml"
            f.write_text(yaml.safe_dump(doc))
            files.append((what, f))
        for version in K8S_VERSIONS:
            args = ["kubernetes-validate", "--strict"]
            if version != "latest":
                args += ["-k", version]
            for what, f in files:
                result = subprocess.run(args + [str(f)], capture_output=True, text=True)
                out = (result.stdout + result.stderr).strip()
                # An unknown core kind is only a warning to kubernetes-validate; here it
                # is a typo in apiVersion/kind, so it fails.
                if result.returncode != 0 or "Couldn't find schema" in out or "passed" not in out:
                    failures.append(f"{what} (kubernetes {version}): {out}")
                else:
                    print(f"  ok {what}: kubernetes-validate --strict, kubernetes {version}")
    return len(core), failures


def main():
    command, root = sys.argv[1], pathlib.Path(sys.argv[2]).resolve()
    count, failures = {"parse": parse, "validate": validate}[command](root)
    for f in failures:
        print(f"  FAIL {f}")
    if failures:
        sys.exit(1)
    print(f"  {command}: {count} checked, no failures")


if __name__ == "__main__":
    main()
