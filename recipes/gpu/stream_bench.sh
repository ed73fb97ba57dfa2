#!/bin/bash
# On a lent GPU machine, from the repository root, with the bundle of recipes/gpu/pack.py in $BUNDLE
# (only its wheels/ and espeak/ are used, so `carry` needs just those two): the CUDA checks of the
# streaming server in one call.
#   1. the CUDA-gated tests (streams at different offsets, fresh and running states, batched on CUDA);
#   2. bench/stream_load.py with the server's defaults (n-gram LM on), batched then unbatched, and
#      greedy (--lm none) when GREEDY=1; one JSON per sweep in $OUT.
# Each step has its own time limit, so a slow step costs its limit and the next still runs.
# About 5 minutes with the default N lists (20 s runs, ~35 s each with start-up and drain).
set -uo pipefail
B=${BUNDLE:-.gpu}
OUT=${OUT:-/tmp/gpu-out}
MAX_BATCH=${MAX_BATCH:-128}
BATCHED=${BATCHED:-"100 200 400 800"}
UNBATCHED=${UNBATCHED:-"50 100 200"}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-20}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
[ -n "${SKIP_WHEELS:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  "$B"/wheels/*.whl
export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PATH="$PWD/$B/espeak/bin:$PATH"
{
  python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
  nproc; espeak-ng --version
} 2>&1 | tee "$OUT/machine.txt"

timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_recognizer.py 2>&1 | tail -5 | tee "$OUT/pytest.txt"

sweep() {  # name, time limit (s), stream_load arguments...
  local name=$1 limit=$2
  shift 2
  echo "== $name" | tee -a "$OUT/stream_load.txt"
  timeout "$limit" python3 bench/stream_load.py --model models/default --seconds "$SECONDS_PER_RUN" --drain-timeout 40 \
    --pattern utterances --no-unbatched --json "$OUT/$name.json" "$@" 2>&1 | grep "^|\|^audio" | tee -a "$OUT/stream_load.txt"
}
sweep lm_batched 260 --streams $BATCHED --max-batch "$MAX_BATCH"
sweep lm_unbatched 200 --streams $UNBATCHED --max-batch 1
if [ -n "${GREEDY:-}" ]; then
  sweep greedy_batched 260 --streams $BATCHED --max-batch "$MAX_BATCH" --server-args "--lm none"
  sweep greedy_unbatched 200 --streams $UNBATCHED --max-batch 1 --server-args "--lm none"
fi
ls -la "$OUT"
