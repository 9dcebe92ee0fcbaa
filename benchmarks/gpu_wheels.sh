#!/usr/bin/env bash
# Download, here, the wheels that the lent GPU machine lacks for benchmarks/gpu_checks.sh.
#
# That machine has python3 3.12 with torch, lightning, timm, tensorboard, scikit-learn and
# transformers, and no network; these pure-Python packages travel in .whl/ (about 1 MB).
#   bash benchmarks/gpu_wheels.sh      # here, once per session
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    -d .whl webdataset==1.0.2 braceexpand==0.1.7 jsonargparse==4.53.0 \
    docstring-parser==0.18.0 typeshed-client==2.15.0 himalaya==0.4.11
ls -1 .whl && du -sh .whl
