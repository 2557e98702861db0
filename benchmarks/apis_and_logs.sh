#!/bin/bash
# The cost of the OpenAI route against V2 (sentence-embedding) and of sampled prediction logs
# (review-sentiment), 32 one-text clients each, two rounds alternating the settings. Run from
# anywhere after `make models`; prints one line per run (README "What they cost"): the benchmark's
# table row, then the server's CPU milliseconds per request (from its /metrics).
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-/tmp}
PORT=${PORT:-8090}
wait_ready() { for _ in $(seq 120); do curl -sf "localhost:$PORT/v2/health/ready" >/dev/null && return 0; sleep 1; done; return 1; }
run() {  # model, label, extra benchmark args...
  local model=$1 label=$2; shift 2
  $PY -m predictors benchmark "$model" --url "http://127.0.0.1:$PORT" --concurrency 32 --texts-per-request 1 --duration 15 \
    --cache-bust --json "$OUT/apis-$label.json" "$@" 2>/dev/null | sed -n 3p | sed "s/^/$label: /"
  $PY -c "import json, sys; (r,) = json.load(open(sys.argv[1])); print('  server CPU ms/request', round(1000 * r['server_cpu_cores'] / r['requests_per_s'], 2))" "$OUT/apis-$label.json"
}

echo "== OpenAI vs V2, sentence-embedding, 32 one-text clients"
$PY -m predictors serve --model_dir models/sentence-embedding --model_name sentence-embedding --http_port "$PORT" --grpc_port $((PORT + 1)) > "$OUT/apis-emb.log" 2>&1 &
PID=$!; wait_ready
for round in 1 2; do
  for api in v2 openai; do run sentence-embedding "$api-round$round" --api "$api"; done
done
kill $PID; wait $PID

echo "== prediction log sampling, review-sentiment, 32 one-text clients"
for round in 1 2; do
  for sample in 0 0.01 1; do
    rm -rf "$OUT/apis-plog"
    PREDICTORS_PREDICTION_LOG_SAMPLE=$sample PREDICTORS_PREDICTION_LOG_PATH="$OUT/apis-plog/predictions.jsonl" \
      $PY -m predictors serve --model_dir models/review-sentiment --model_name review-sentiment --http_port "$PORT" --grpc_port $((PORT + 1)) > "$OUT/apis-rs.log" 2>&1 &
    PID=$!; wait_ready
    run review-sentiment "sample$sample-round$round"
    kill $PID; wait $PID
    echo "  lines written: $(cat "$OUT"/apis-plog/predictions.jsonl* 2>/dev/null | wc -l)"
  done
done
