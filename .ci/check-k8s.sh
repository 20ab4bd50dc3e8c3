#!/usr/bin/env bash
# Checks of the Kubernetes side that need no cluster and no Docker engine (called by
# .ci/run; runnable alone from a fresh clone: bash .ci/check-k8s.sh):
#
#   1. YAML: every file under k8s/ and charts/ (and kind-config.yaml) parses; chart
#      templates are skipped except the RBAC ones, which must parse unrendered with
#      plain rules (a Rust test compares them with the operator's code).
#   2. kubernetes-validate --strict (PyPI) on the core-kind objects of k8s/ and of the
#      chart's crds/ (the CustomResourceDefinition), for Kubernetes 1.30 and the newest
#      it knows; custom kinds (Kafka, KafkaNodePool, EventPipeline) are skipped by name.
#   3. helm lint of charts/eventpipe-operator (renders every template, checks
#      values.schema.json) through libhelm from the PyPI wheel helm-sdkpy, called with
#      ctypes; plus lints of value variants that must pass and broken copies that must
#      fail.
#   4. The Tiltfile executed under starlark-go (PyPI) with Tilt's builtins stubbed:
#      every path it references exists, its resource graph is closed, image names agree.
#   5. The Dockerfile against the workspace: it builds and copies exactly the image's
#      binaries, each a workspace package, and .dockerignore lets in what it needs.
#
# Installs what it needs with pip (pinned). helm-sdkpy declares Python >= 3.12 for its
# wrapper, which is not used: only its shared library is, so it is installed into a
# cache folder with --ignore-requires-python --no-deps. The wheel ships libhelm for
# linux-amd64 only.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD

HELM_SDKPY_VERSION=0.1.32
cache=${XDG_CACHE_HOME:-$HOME/.cache}/eventpipe-ci
libhelm_dir=$cache/helm-sdkpy-$HELM_SDKPY_VERSION

echo "--- install Python tools"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  kubernetes-validate==1.37.0 starlark-go==1.0.1 pyyaml==6.0.3 || exit 1
if [ ! -f "$libhelm_dir/.complete" ]; then
  rm -rf "$libhelm_dir"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --ignore-requires-python \
    --target "$libhelm_dir" "helm-sdkpy==$HELM_SDKPY_VERSION" || exit 1
  touch "$libhelm_dir/.complete"
fi

passed=0
failed=0
failed_names=()
check() {
  local name=$1
  shift
  echo "--- $name"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failed_names+=("$name")
  fi
}

check "YAML parses" python3 .ci/k8s_manifests.py parse "$root"
check "kubernetes-validate --strict (core kinds in k8s/ and crds/)" python3 .ci/k8s_manifests.py validate "$root"
check "helm lint charts/eventpipe-operator (libhelm via ctypes)" \
  python3 .ci/helm_lint.py "$libhelm_dir" "$root/charts/eventpipe-operator"
check "Tiltfile under starlark-go" python3 .ci/tiltfile_check.py "$root"
check "Dockerfile against the workspace" python3 .ci/dockerfile_check.py "$root"

if [ "$failed" -gt 0 ]; then
  printf 'failed: %s\n' "${failed_names[@]}"
fi
echo "check-k8s: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
