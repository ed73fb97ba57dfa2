#!/bin/bash
# On a lent GPU machine, from the repository root, with the bundle of recipes/gpu/pack.py in
# $BUNDLE (.gpu): install the carried wheels, render the corpus, fine-tune models/small-streaming for
# $MINUTES minutes, and copy the exported model and logs to $OUT (files split under 15 MiB).
set -euo pipefail
B=${BUNDLE:-.gpu}
OUT=${OUT:-/tmp/gpu-out}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
[ -n "${SKIP_WHEELS:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  "$B"/wheels/*.whl
export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PATH="$PWD/$B/espeak/bin:$PATH"
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
python3 recipes/gpu/render.py --bundle "$B" --work /tmp/gpu-corpus --repeat 2 ${RENDER_ARGS:-}
# The starting model without its language model: the LM (13 MB) does not fit in the carry
# beside the bundle, so the tree sent here may lack lm.arpa.gz; training never reads it.
rm -rf /tmp/gpu-exp /tmp/gpu-init && mkdir -p /tmp/gpu-init
cp models/small-streaming/{model.safetensors,cmvn.json,units.txt,bpe.model} /tmp/gpu-init/
python3 - <<'PY'
import json
c = json.load(open("models/small-streaming/config.json"))
c.pop("lm", None)
c["files"].pop("lm.arpa.gz", None)
json.dump(c, open("/tmp/gpu-init/config.json", "w"), indent=1, ensure_ascii=False)
PY
GPU_INIT=/tmp/gpu-init GPU_CORPUS=/tmp/gpu-corpus TINGXIE_EXP=/tmp/gpu-exp python3 -m tingxie train --config recipes/gpu/finetune.yaml \
  --set max_minutes="${MINUTES:-5}" --set progress=false --set log_interval=10 ${TRAIN_ARGS:-} 2>&1 | tee /tmp/gpu-train.log
mkdir -p "$OUT"
for f in /tmp/gpu-exp/model/config.json /tmp/gpu-exp/model/cmvn.json /tmp/gpu-exp/train_log.jsonl /tmp/gpu-train.log; do
  [ ! -f "$f" ] || cp "$f" "$OUT"/
done
split -b 15M /tmp/gpu-exp/model/model.safetensors "$OUT"/model.safetensors.part-
ls -la "$OUT"
