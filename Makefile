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

# The main job: the quickstart sweep (coordinator and local workers in one
# process), then the best configuration per stack. Its database is
# build/quickstart.db: a second `make run` resumes the finished study and
# prints the same answer at once (`rm build/quickstart.db` to start over).
run: build
	@$(BUILD)/masktune validate configs/examples/quickstart.yaml
	@$(BUILD)/masktune run configs/examples/quickstart.yaml --db $(BUILD)/quickstart.db

test: build
	@cd $(BUILD) && ./masktune_tests

bench: build
	@$(BUILD)/bench_attention

clean:
	@rm -rf $(BUILD)
