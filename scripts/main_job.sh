#!/usr/bin/env bash
# The main job behind `make run`: genesis and models, a kernel in the
# background, one real mission with live progress, a clean shutdown.
set -euo pipefail
BATOS=${BATOS:-.venv/bin/batos}
IMAGE=${IMAGE:-live_image}
QUESTION=${QUESTION:-"Why is the sky blue? Answer in two sentences."}

echo "== batos init ($IMAGE): genesis and the embedded models"
"$BATOS" init --image "$IMAGE"

if "$BATOS" ping --image "$IMAGE" --timeout 1 >/dev/null 2>&1; then
    echo "== a kernel already serves $IMAGE: using it"
    started=""
else
    echo "== batos serve (log: $IMAGE/kernel.log)"
    "$BATOS" serve --image "$IMAGE" >"$IMAGE/kernel.log" 2>&1 &
    started=$!
    trap 'kill -TERM "$started" 2>/dev/null || true; wait "$started" 2>/dev/null || true' EXIT
    for _ in $(seq 1 120); do
        if "$BATOS" ping --image "$IMAGE" --timeout 1 >/dev/null 2>&1; then break; fi
        if ! kill -0 "$started" 2>/dev/null; then cat "$IMAGE/kernel.log"; exit 1; fi
        sleep 0.5
    done
    "$BATOS" ping --image "$IMAGE"
fi

echo "== batos mission \"$QUESTION\""
status=0
"$BATOS" mission "$QUESTION" --image "$IMAGE" || status=$?

echo "== batos adapters: the persona adapters the passes wore (tier, hits, swap times)"
"$BATOS" adapters --image "$IMAGE" || true

if [ -n "$started" ]; then
    echo "== the engine that answered (backend, compute threads)"
    grep -m1 "engine backend" "$IMAGE/kernel.log" || true
    echo "== stopping the kernel (SIGTERM)"
    kill -TERM "$started"
    wait "$started" || true
    trap - EXIT
fi
"$BATOS" image info --image "$IMAGE" | tail -2
exit "$status"
