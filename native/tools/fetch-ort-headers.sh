#!/bin/sh
# Fetch ONNX Runtime's C API headers into FOLDER (default: build/ort-headers) the way a user would: the
# onnxruntime wheel ships libonnxruntime but no headers, so take them from the npm package
# com.github.asus4.onnxruntime 0.4.9 (ORT 1.29, API version 29; the C API is ABI-stable, so these
# headers build hosts that run against newer libonnxruntime releases, such as the 1.32 wheel's).
set -eu
folder=${1:-build/ort-headers}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent com.github.asus4.onnxruntime@0.4.9 >/dev/null && tar xzf ./*.tgz)
headers=$(dirname "$(find "$work/package" -path '*ios-arm64/*' -name onnxruntime_c_api.h | head -n 1)")
mkdir -p "$folder"
cp "$headers"/*.h "$folder"/
echo "$folder"
