#!/usr/bin/env bash
# Build llama.cpp (the copy vendored in llama-cpp-python, the version the Makefile installs) for an x86-64-v3 CPU
# -- AVX2/FMA/F16C/BMI2, no AVX-512, no AMX -- with its test suite, run the tests, and check with objdump that no
# AVX-512 (zmm) or AMX (tile) instruction made it into the libraries. It proves that tools/llama_cpp_flags.py builds
# a llama.cpp that works on a machine without AVX-512 (most laptops, GitHub's hosted runners).
#
# On demand only, never in CI: one compile job at nice 19 takes about an hour on a shared 2-core machine.
#
#   tools/llama_cpp_v3_tests.sh                  # work in /tmp/llama_v3 (sdist, build/, logs)
#   LLAMA_V3_DIR=/somewhere JOBS=4 tools/llama_cpp_v3_tests.sh
#
# Tests left out (ctest -LE/-E): they need model files downloaded from the network, or the network itself:
#   label "model" (test-model-load-cancel, test-autorelease, test-backend-sampler, test-state-restore-fragmented,
#   test-gguf-model-data, test-quant-type-selection), test-download-model (fetches stories15M), test-thread-safety
#   (runs that model), test-tokenizers-ggml-vocabs (git-clones huggingface.co/ggml-org/vocabs); and test-chat, which
#   links llama-server's library (LLAMA_BUILD_SERVER, whose web UI the configure step fetches from the network);
#   test-arg-parser, whose last part fetches http://ggml.ai/ (its argument-parsing parts all pass offline).
# Only the test executables and what they link are built (the tools are not), libmtmd standalone for its tests.
set -euo pipefail

VERSION=0.3.36
HERE=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$HERE/.venv/bin/python}
WORK=${LLAMA_V3_DIR:-/tmp/llama_v3}
SDIST=${LLAMA_V3_SDIST:-$WORK/llama_cpp_python-$VERSION}   # an unpacked sdist (fetched when missing)
BUILD=${LLAMA_V3_BUILD:-$WORK/build}
JOBS=${JOBS:-1}
V3_FLAGS="sse4_2 avx avx2 fma f16c bmi2 movbe popcnt"   # the cpuinfo flags of an x86-64-v3 CPU that ggml uses
EXCLUDE="^(test-download-model|test-thread-safety|test-tokenizers-ggml-vocabs|test-chat|test-arg-parser)$"
mkdir -p "$WORK"

stamp() { echo "== $(date -u +%H:%M:%S) $*"; }

if [ ! -d "$SDIST/vendor/llama.cpp" ]; then
    stamp "fetching the llama-cpp-python $VERSION sdist (pip's cache first)"
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: -d "$WORK" "llama-cpp-python==$VERSION"
    tar -xzf "$WORK/llama_cpp_python-$VERSION.tar.gz" -C "$(dirname "$SDIST")"
fi

read -r -a GGML_ARGS <<< "$("$PYTHON" "$HERE/tools/llama_cpp_flags.py" --flags "$V3_FLAGS")"
stamp "configure: ${GGML_ARGS[*]}"
cmake -S "$SDIST/vendor/llama.cpp" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release "${GGML_ARGS[@]}" \
    -DCMAKE_C_FLAGS=-march=x86-64-v3 -DCMAKE_CXX_FLAGS=-march=x86-64-v3 \
    -DLLAMA_BUILD_TESTS=ON -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_MTMD=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF

mapfile -t TARGETS < <(cmake --build "$BUILD" --target help | awk '$2 ~ /^test-/ && $2 != "test-chat" {print $2}')
stamp "build ${#TARGETS[@]} test programs (-j$JOBS, nice 19)"
nice -n 19 cmake --build "$BUILD" -j"$JOBS" --target "${TARGETS[@]}"

stamp "ctest (left out: label model; $EXCLUDE)"
status=0
(cd "$BUILD" && nice -n 19 ctest --output-on-failure --timeout 900 -LE model -E "$EXCLUDE") || status=$?

stamp "AVX-512 / AMX instructions in the built libraries (must be 0)"
bad=0
for lib in $(find "$BUILD/bin" -maxdepth 1 -name 'lib*.so*' -type f | sort); do
    zmm=$(objdump -d "$lib" | grep -c '%zmm' || true)
    amx=$(objdump -d "$lib" | grep -cE '\b(tileloadd|tileloaddt1|tilestored|tdpb[su][su]d|tdpbf16ps|ldtilecfg|sttilecfg|tilezero|tilerelease)\b' || true)
    ymm=$(objdump -d "$lib" | grep -c '%ymm' || true)
    echo "$(basename "$lib"): zmm $zmm, amx $amx (ymm $ymm)"
    if [ "$zmm" != 0 ] || [ "$amx" != 0 ]; then bad=1; fi
done
[ "$bad" = 0 ] || { echo "FAIL: AVX-512 or AMX instructions found"; status=1; }
stamp "done, exit $status"
exit "$status"
