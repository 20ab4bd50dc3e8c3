#!/usr/bin/env bash
# End to end on kind, for a machine with Docker, kind, helm, kubectl, curl and python3:
# creates the cluster from kind-config.yaml, installs Strimzi (Helm), builds the image and
# loads it into kind, installs the operator chart, applies the Kafka cluster and the
# example EventPipeline, waits for the pipeline to be Ready, checks through the
# dashboard's API that risk scores and interventions flow, shows `kubectl get evp`, then
# deletes the pipeline and checks that its topicDeletionPolicy was honoured (Retain: the
# KafkaTopics stay, marked strimzi.io/managed: "false"; Delete: they are gone).
#
# Stops at the first broken step with what went wrong and the cluster's state. Deletes
# the cluster at the end unless --keep is given (a cluster that already existed is reused
# and never deleted).
#
# usage: scripts/e2e-kind.sh [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."

keep=false
for arg in "$@"; do
  case $arg in
    --keep) keep=true ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "e2e-kind: unknown argument $arg (usage: $0 [--keep])" >&2; exit 2 ;;
  esac
done

CLUSTER=eventpipe
CONTEXT=kind-$CLUSTER
STRIMZI_VERSION=1.2.0
IMAGE=eventpipe:dev
OPERATOR_NAMESPACE=eventpipe-system
PIPELINE=pre-delinquency
PIPELINE_NAMESPACE=eventpipe
PIPELINE_FILE=k8s/examples/pre-delinquency.yaml
DASHBOARD_URL=http://localhost:30080
LOGICAL_TOPICS="transactions customer-outcomes customer-features risk-scores intervention-state interventions pipeline-stats dead-letter"

started=$SECONDS
current_step="start"
step() {
  current_step=$*
  printf '\n=== [%ss] %s\n' "$((SECONDS - started))" "$*"
}
k() { kubectl --context "$CONTEXT" "$@"; }

diagnostics() {
  echo "--- cluster state after the failure" >&2
  k get evp -A -o wide >&2 || true
  k get evp -A -o yaml >&2 || true
  k get pods -A -o wide >&2 || true
  k -n kafka get kafka,kafkanodepool,kafkatopics >&2 || true
  k -n "$OPERATOR_NAMESPACE" logs deployment/eventpipe-operator --tail=100 >&2 || true
  k get events -A --sort-by=.lastTimestamp >&2 | tail -40 || true
}
fail() {
  echo "e2e-kind: FAILED at step \"$current_step\": $*" >&2
  diagnostics
  exit 1
}
on_error() {
  local rc=$? line=$1
  echo "e2e-kind: FAILED at step \"$current_step\" (exit $rc, line $line)" >&2
  diagnostics
}
trap 'on_error $LINENO' ERR

created=false
cleanup() {
  if $created && ! $keep; then
    echo "--- deleting kind cluster $CLUSTER (use --keep to leave it up)"
    kind delete cluster --name "$CLUSTER" || true
  elif $created; then
    echo "--- kind cluster $CLUSTER left up (--keep): kind delete cluster --name $CLUSTER"
  fi
}
trap cleanup EXIT

step "tools"
for tool in docker kind helm kubectl curl python3; do
  command -v "$tool" >/dev/null || fail "$tool is not on PATH"
done
docker info >/dev/null 2>&1 || fail "docker cannot reach a Docker engine"
[ -f "$PIPELINE_FILE" ] || fail "$PIPELINE_FILE is missing"

step "kind cluster $CLUSTER"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "reusing the existing cluster $CLUSTER (it will not be deleted)"
else
  kind create cluster --config kind-config.yaml --wait 180s
  created=true
fi
k cluster-info >/dev/null || fail "context $CONTEXT does not reach the cluster"

step "namespaces"
k apply -f k8s/namespaces.yaml

step "Strimzi $STRIMZI_VERSION (Helm chart) in namespace kafka"
helm --kube-context "$CONTEXT" upgrade --install strimzi-cluster-operator \
  oci://quay.io/strimzi-helm/strimzi-kafka-operator --version "$STRIMZI_VERSION" \
  --namespace kafka --wait --timeout 10m

step "build $IMAGE and load it into kind"
DOCKER_BUILDKIT=1 docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "install the operator chart into $OPERATOR_NAMESPACE"
helm --kube-context "$CONTEXT" upgrade --install eventpipe-operator charts/eventpipe-operator \
  --namespace "$OPERATOR_NAMESPACE" --create-namespace \
  --set image.repository=eventpipe --set image.tag=dev --wait --timeout 5m
k get crd eventpipelines.eventpipe.dev >/dev/null || fail "the chart did not install the EventPipeline CRD"

step "Kafka cluster eventpipe-kafka"
k apply -f k8s/kafka.yaml
k -n kafka wait --for=condition=Ready kafka/eventpipe-kafka --timeout=900s \
  || fail "Kafka eventpipe-kafka did not become Ready"

step "EventPipeline $PIPELINE"
k apply -f "$PIPELINE_FILE"
k -n "$PIPELINE_NAMESPACE" wait --for=condition=Ready "evp/$PIPELINE" --timeout=900s \
  || fail "EventPipeline $PIPELINE did not become Ready"
phase=$(k -n "$PIPELINE_NAMESPACE" get evp "$PIPELINE" -o jsonpath='{.status.phase}')
[ "$phase" = Running ] || fail "EventPipeline $PIPELINE is Ready but its phase is '$phase', not Running"
for logical in $LOGICAL_TOPICS; do
  k -n kafka wait --for=condition=Ready "kafkatopic/$PIPELINE-$logical" --timeout=300s \
    || fail "KafkaTopic $PIPELINE-$logical is not Ready"
done
for stage in producer feature-processor intervention dashboard; do
  k -n "$PIPELINE_NAMESPACE" rollout status "deployment/$PIPELINE-$stage" --timeout=300s \
    || fail "Deployment $PIPELINE-$stage did not roll out"
done

step "risk scores and interventions through the dashboard API ($DASHBOARD_URL/api/stats)"
deadline=$((SECONDS + 900))
stats=""
while :; do
  stats=$(curl -fsS --max-time 5 "$DASHBOARD_URL/api/stats" 2>/dev/null || true)
  counts=$(printf '%s' "$stats" | python3 -c '
import json, sys
try:
    t = json.load(sys.stdin)["totals"]
    print(t["risk_scores"], t["interventions"])
except Exception:
    print("0 0")
')
  read -r risk_scores interventions <<<"$counts"
  echo "risk_scores=$risk_scores interventions=$interventions"
  if [ "$risk_scores" -gt 0 ] && [ "$interventions" -gt 0 ]; then
    break
  fi
  [ $SECONDS -lt $deadline ] || fail "no risk scores and interventions on the dashboard after 15 minutes; last answer: ${stats:-none}"
  sleep 10
done

step "kubectl get evp"
k -n "$PIPELINE_NAMESPACE" get evp -o wide
k -n kafka get kafkatopics

step "delete the pipeline and check its topicDeletionPolicy"
policy=$(k -n "$PIPELINE_NAMESPACE" get evp "$PIPELINE" -o jsonpath='{.spec.topicDeletionPolicy}')
policy=${policy:-Retain}
echo "topicDeletionPolicy: $policy"
k -n "$PIPELINE_NAMESPACE" delete evp "$PIPELINE" --wait --timeout=300s \
  || fail "EventPipeline $PIPELINE was not deleted (finalizer stuck?)"
deadline=$((SECONDS + 300))
while [ -n "$(k -n "$PIPELINE_NAMESPACE" get deployment -l "app.kubernetes.io/instance=$PIPELINE" -o name)" ]; do
  [ $SECONDS -lt $deadline ] || fail "the stage Deployments of $PIPELINE are still there 5 minutes after the delete"
  sleep 5
done
echo "stage Deployments of $PIPELINE: gone"
case $policy in
  Retain)
    for logical in $LOGICAL_TOPICS; do
      managed=$(k -n kafka get kafkatopic "$PIPELINE-$logical" -o jsonpath='{.metadata.annotations.strimzi\.io/managed}') \
        || fail "Retain: KafkaTopic $PIPELINE-$logical was deleted"
      [ "$managed" = false ] || fail "Retain: KafkaTopic $PIPELINE-$logical has strimzi.io/managed='$managed', not 'false'"
      echo "kept kafkatopic/$PIPELINE-$logical (strimzi.io/managed: false)"
    done
    ;;
  Delete)
    for logical in $LOGICAL_TOPICS; do
      k -n kafka wait --for=delete "kafkatopic/$PIPELINE-$logical" --timeout=300s \
        || fail "Delete: KafkaTopic $PIPELINE-$logical is still there"
      echo "deleted kafkatopic/$PIPELINE-$logical"
    done
    ;;
  *) fail "unknown topicDeletionPolicy '$policy'" ;;
esac

current_step="finished"
echo
echo "e2e-kind: passed in $((SECONDS - started))s"
