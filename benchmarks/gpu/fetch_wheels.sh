#!/usr/bin/env bash
# Download (here, with PyPI access) the wheels the GPU machine lacks for the service, into .whl/
# (ignored by git); the device call carries .whl. Python 3.12, x86-64 manylinux.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl fastapi starlette uvicorn pydantic pydantic-core pydantic-settings python-dotenv annotated-types \
  typing-inspection annotated-doc
du -sh .whl
