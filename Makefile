# The two commands of the README, and a few more.
#   make run    install what is missing, build, start Kiln (embedded store)
#   make test   install, build, run every test
#   make build  build only;  make bench  run the benchmarks beside the peers

BUILD ?= build
LISTEN ?= 127.0.0.1:8080
DATA ?= data
CMAKE_FLAGS ?=
ifeq ($(CI),true)
CMAKE_FLAGS += -DKILN_WERROR=ON
endif

.PHONY: deps build run test bench clean

deps:
	@scripts/install-deps

build: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	@ninja -C $(BUILD)

run: build
	$(BUILD)/kiln serve --listen $(LISTEN) --data $(DATA)

test: build
	@tests/compat/install.sh
	cd $(BUILD) && ctest --output-on-failure --timeout 600 -j3

bench: build
	@scripts/install-deps --bench
	bench/run.sh

clean:
	rm -rf $(BUILD)
