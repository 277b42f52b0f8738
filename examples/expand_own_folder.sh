#!/usr/bin/env bash
# Expand your own image folder (ImageFolder layout: one sub-folder per class) and see whether it helped.
#
#   my_images/
#     cat/001.png 002.jpg ...
#     dog/001.png ...
#
# Usage: bash examples/expand_own_folder.sh /path/to/my_images [extra --set options]
# The input folder is only read; everything is written to runs/my_folder/.
set -euo pipefail
images=${1:?usage: $0 /path/to/my_images [--set key=value ...]}
shift
here=$(cd "$(dirname "$0")/.." && pwd)
augment run "$here/configs/my_folder.yaml" --set "data.path=$(cd "$images" && pwd)" "$@"
# Then:
#   runs/my_folder/report/report.md       the verdict and the per-arm table
#   runs/my_folder/expanded/<class>/...   the expanded dataset (torchvision ImageFolder)
#   python examples/train_on_expanded.py runs/my_folder
