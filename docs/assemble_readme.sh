#!/usr/bin/env bash
# Rebuild README.md from the section fragments in docs/readme/ (one per area), in reading order.
set -euo pipefail
cd "$(dirname "$0")/readme"
order=(00-intro.md quickstart-deploy.md 10-model.md tokenizer-and-data.md pretraining.md finetune-evaluate.md export.md service.md 90-benchmarks.md)
for f in "${order[@]}"; do
  [ -f "$f" ] || continue
  cat "$f"
  echo
done > ../../README.md
