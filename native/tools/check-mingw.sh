#!/bin/sh
# Cross-compile for Windows with Debian's mingw-w64 (apt-get install mingw-w64): the shim as a DLL that
# exports ORT's decrypt/encrypt (linked and its exports checked), and every libortseal source, the
# Windows OS layer (os_win.c) included, compiled to objects. Linking libortseal.dll needs a Windows OpenSSL
# 3 (Debian has none): configure with -DCMAKE_TOOLCHAIN_FILE=native/cmake/mingw-w64.cmake -DOPENSSL_ROOT_DIR=...
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
shim=${ORTSEAL_SHIM_DIR:-$here/../ortseal/tensorrt}
out=${1:-$(mktemp -d)}
mkdir -p "$out"
cc=x86_64-w64-mingw32-gcc
$cc -std=c11 -O2 -Wall -shared -o "$out/ortseal_shim.dll" "$shim/shim.c" -I"$shim" -static -lpthread
x86_64-w64-mingw32-objdump -p "$out/ortseal_shim.dll" > "$out/exports.txt"
for symbol in decrypt encrypt ortseal_shim_register ortseal_shim_unregister; do
    grep -Eq "\] $symbol\$" "$out/exports.txt" || { echo "ortseal_shim.dll does not export $symbol" >&2; exit 1; }
done
# OpenSSL's headers are the same on every platform but for its build configuration: copy both (not all of
# /usr/include, which would bring glibc's headers in).
mkdir -p "$out/include/openssl"
cp /usr/include/openssl/*.h "$out/include/openssl/"
cp /usr/include/x86_64-linux-gnu/openssl/*.h "$out/include/openssl/"
for src in errors crypto json keyset blob pb model engine os_win; do
    $cc -std=c11 -O2 -Wall -Wextra -Wno-unused-parameter -Werror -DORTSEAL_BUILDING_SHARED \
        -I"$here/include" -I"$out/include" -c "$here/src/$src.c" -o "$out/$src.o"
done
if [ -n "${ORTSEAL_ORT_INCLUDE_DIR:-}" ]; then  # the session API too, with ORT's header
    $cc -std=c11 -O2 -Wall -Wextra -Wno-unused-parameter -Werror -DORTSEAL_BUILDING_SHARED -I"$here/include" \
        -I"$out/include" -I"$ORTSEAL_ORT_INCLUDE_DIR" -c "$here/src/session.c" -o "$out/session.o"
fi
echo "mingw-w64: ortseal_shim.dll linked (exports decrypt, encrypt); libortseal sources compiled in $out"
