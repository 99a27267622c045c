# masktune front: `make run` and `make test` work on a fresh machine.
# Both install missing Debian packages first (scripts/setup.sh, silent when
# everything is present), then configure and build in build/.

BUILD   ?= build
JOBS    ?= $(shell nproc)
GOLDEN  ?= ../shared/golden
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: all setup configure build run test bench clean

all: build

setup:
	@scripts/setup.sh

$(BUILD)/CMakeCache.txt: | setup
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null

configure: $(BUILD)/CMakeCache.txt

build: setup configure
	@cmake --build $(BUILD) -j$(JOBS)

# The main job. Until the sweep runtime exists: one masker stack on a
# reference case, printed as masktune attend prints it, then dense attention.
run: build
	@echo "== masktune attend: sink 4 + local 8 + oracle_top_k 0.1 on $(GOLDEN)/oracle_topk_s1.safetensors"
	@$(BUILD)/masktune attend --input $(GOLDEN)/oracle_topk_s1.safetensors \
	  --maskers '[{"type":"sink","sink_size":4},{"type":"local","window_size":8},{"type":"oracle_top_k","heavy_size":0.1}]' \
	  --repeat 5
	@echo "== the same input, dense attention ([])"
	@$(BUILD)/masktune attend --input $(GOLDEN)/oracle_topk_s1.safetensors --maskers '[]'

test: build
	@cd $(BUILD) && ./masktune_tests

bench: build
	@$(BUILD)/bench_attention

clean:
	@rm -rf $(BUILD)
