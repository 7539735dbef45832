#!/usr/bin/env bash
# Every benchmark command at its smallest size: a check that each still runs end to end on this
# checkout (`make bench-smoke`), not figures (BENCHMARKS.md gives the real commands and sizes).
# Results go to a temporary folder; bench/out/ is left as it is (bench/memory.py and
# bench/report_page.py print theirs). Parts that need data this machine may not have (BSDS500,
# PolyU, LOL, Chromium) say so and are skipped; the run fails if any command that ran failed.
# Names as arguments run only those parts: bench/smoke.sh quality train
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BSDS=${BSDS:-../shared/data/bsds500}
POLYU=${POLYU:-/work/data/polyu/CroppedImages}
LOL=${LOL:-/work/data/lol/dataset/test}
T=$(mktemp -d /tmp/raydenoise-bench-smoke-XXXXXX)
failed=()

ONLY=" $* "
run() {  # run NAME COMMAND...: time it, keep its log, remember a failure
    local name=$1
    shift
    if [ "$ONLY" != "  " ] && [[ "$ONLY" != *" $name "* ]]; then return; fi
    local t0=$SECONDS
    if "$@" >"$T/$name.log" 2>&1; then
        echo "bench-smoke: $name ok ($((SECONDS - t0)) s)"
    else
        echo "bench-smoke: $name FAILED ($((SECONDS - t0)) s); last lines of $T/$name.log:"
        tail -n 15 "$T/$name.log" | sed 's/^/    /'
        failed+=("$name")
    fi
}

skip() { echo "bench-smoke: $1 skipped ($2)"; }

run ingest "$PY" bench/ingest.py --sizes 10 --out "$T/ingest.json"
run denoise "$PY" bench/denoise.py --images 4 --models seed-ae --engines torch,onnxruntime \
    --nlm-images 1 --baseline HEAD --repeats 2 --out "$T/denoise.json"
run memory "$PY" bench/memory.py --size 800x600 --modes auto,untiled
run scale "$PY" bench/scale.py --sizes 1000 --dir "$T/scale" --out "$T/scale.json"
run startup "$PY" bench/startup.py --baseline HEAD --images 2 --repeats 1 --out "$T/startup.json"
if command -v chromedriver >/dev/null || [ -x /usr/bin/chromedriver ]; then
    run report_page "$PY" bench/report_page.py --rows 100
else
    skip report_page "no Chromium: make browser installs it"
fi
if [ -d "$BSDS/test" ]; then
    run quality "$PY" bench/quality.py --bsds "$BSDS" --parts bsds,estimator,jpeg,gray,models \
        --limit 2 --sigmas 0,25 --methods input,builtin:denoise,nlm,bm3d --out "$T/quality.json"
    run per_image "$PY" bench/per_image.py --bsds "$BSDS" --images 2 --repeats 1 --actor --engines onnxruntime --out "$T/per_image.json"
    run train-precision "$PY" bench/train.py --bsds "$BSDS" --only precision --rounds 1 \
        --workdir "$T/train-precision" --out "$T/train-precision.json"
    run train "$PY" bench/train.py --bsds "$BSDS" --only quality --budget 15 --test-limit 2 \
        --workdir "$T/train" --out "$T/train.json"
    run evaluate "$PY" bench/evaluate.py --bsds "$BSDS" --noises gaussian:25 --budget 10 \
        --work "$T/evaluate" --out "$T/evaluate.json"
else
    skip "quality, train, evaluate" "no BSDS500 at $BSDS (BSDS=... names it)"
fi
if [ -d "$POLYU" ]; then
    run quality-real "$PY" bench/quality.py --bsds "$BSDS" --parts real --real "$POLYU" \
        --real-every 25 --methods input,builtin:denoise --out "$T/quality-real.json"
else
    skip quality-real "no PolyU crops at $POLYU (POLYU=... names it)"
fi
if [ -d "$LOL/low" ]; then
    run quality-lol "$PY" bench/quality.py --bsds "$BSDS" --parts lol,lowlight --lol "$LOL" \
        --limit 2 --lol-methods input,gamma,builtin:low-light --out "$T/quality-lol.json"
else
    skip quality-lol "no LOL eval15 at $LOL (LOL=... names it)"
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "bench-smoke: failed: ${failed[*]} (logs in $T)"
    exit 1
fi
echo "bench-smoke: every command that ran passed (logs in $T)"
