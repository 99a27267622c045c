# masktune front: `make run` and `make test` work on a fresh machine.
# Both install missing Debian packages and fetch the model first
# (scripts/setup.sh, silent when everything is present), then configure and
# build in build/. `make test` also starts a local SLURM for its SLURM test
# (scripts/slurm_local.sh: installs slurm-wlm and munge if missing) and stops
# the daemons it started when that test ends.

BUILD   ?= build
JOBS    ?= $(shell nproc)
GOLDEN  ?= ../shared/golden
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: all setup configure build run test sanitize bench format format-check clean

all: build

setup:
	@scripts/setup.sh

$(BUILD)/CMakeCache.txt: | setup
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null

configure: $(BUILD)/CMakeCache.txt

build: setup configure
	@cmake --build $(BUILD) -j$(JOBS)

# The main job: the quickstart sweep (coordinator and local workers in one
# process), then the best configuration per stack, then the study's HTML
# report (build/quickstart.html). Its database is build/quickstart.db: a
# second `make run` resumes the finished study and prints the same answer at
# once (`rm build/quickstart.db` to start over).
run: build
	@$(BUILD)/masktune validate configs/examples/quickstart.yaml
	@$(BUILD)/masktune run configs/examples/quickstart.yaml --db $(BUILD)/quickstart.db
	@$(BUILD)/masktune report quickstart --db $(BUILD)/quickstart.db --out $(BUILD)/quickstart.html
	@echo "the same, live in a browser: $(BUILD)/masktune dashboard --db $(BUILD)/quickstart.db, then http://127.0.0.1:8080/"

# One line per test case as it finishes, then doctest's summary.
test: build
	@cd $(BUILD) && ./masktune_tests

# The engine's speed (attention and every masker on a decode step), then the
# runtime's (noop trials through the coordinator and SQLite).
# The suite under AddressSanitizer and UndefinedBehaviorSanitizer (CPU
# engine; build-asan/). Any report fails the run. Slow: minutes of build on
# 2 cores, and the model test is left out (-tce) as it takes ~10x longer.
SANITIZE_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
sanitize: setup
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMASKTUNE_CUDA=OFF \
	  -DCMAKE_CXX_FLAGS="$(SANITIZE_FLAGS)" -DCMAKE_EXE_LINKER_FLAGS="$(SANITIZE_FLAGS)" >/dev/null
	@cmake --build build-asan -j$(JOBS) --target masktune masktune_tests
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ./masktune_tests -tce='*ruler_niah*,SLURM*' $(TEST_ARGS)

bench: build
	@$(BUILD)/bench_attention
	@$(BUILD)/bench_runtime

# clang-format with .clang-format over every tracked *.cpp *.h *.cu *.cuh:
# format-check lists the files that deviate (exit 1); format rewrites them.
format-check: setup
	@scripts/check_format.sh

format: setup
	@scripts/check_format.sh --fix

clean:
	@rm -rf $(BUILD)
