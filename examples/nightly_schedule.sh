#!/usr/bin/env bash
# Re-run the expansion of your own image folder every night, as new labelled images arrive.
#
# Usage: bash examples/nightly_schedule.sh /path/to/my_images ["0 2 * * *"] [extra --set options]
#
# Starts a local Prefect server in the background if none answers at PREFECT_API_URL (the
# scheduler lives in the server), then serves the flow as the deployment
# augment-dataset/my_folder until you press Ctrl-C. Nights without new images finish in seconds
# (every stage cached); `augment runs runs/` shows one line per new result.
set -euo pipefail
images=${1:?usage: $0 /path/to/my_images [cron] [--set key=value ...]}
cron=${2:-"0 2 * * *"}
shift $(( $# >= 2 ? 2 : 1 ))
here=$(cd "$(dirname "$0")/.." && pwd)
export PREFECT_API_URL=${PREFECT_API_URL:-http://127.0.0.1:4200/api}
if ! python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/health', timeout=3)" "$PREFECT_API_URL" 2>/dev/null; then
  prefect server start --background   # stop it later with: prefect server stop
fi
cd "$here"
augment schedule configs/my_folder.yaml --cron "$cron" --set "data.path=$(cd "$images" && pwd)" "$@"
