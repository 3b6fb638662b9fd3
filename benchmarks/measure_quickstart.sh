#!/bin/bash
# Times the README's quick-start command end to end as a new user meets it: a fresh clone of this repository, a fresh
# virtual environment, an empty pip cache and an empty model cache (so the SmolLM2 conversion is included).
#   bash benchmarks/measure_quickstart.sh      # prints the run, then WALL_SECONDS
set -e
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/qs}
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
git clone -q "$REPO" repo && cd repo
python -m venv "$WORK/venv" && . "$WORK/venv/bin/activate"
export TRL_RANKING_CACHE="$WORK/cache" PIP_CACHE_DIR="$WORK/pipcache"
start=$(date +%s)
CMD=$(grep -m1 "python -m trl_ranking.quickstart$" README.md)
echo "command: $CMD"
bash -c "$CMD" 2>&1
end=$(date +%s)
echo "WALL_SECONDS $((end - start))"
