# darksidesync -- the two commands a newcomer needs:
#   make demo   runs examples/demo.lua: a Copas loop fed by resolver threads
#   make test   builds and tests against Lua 5.1-5.4 and LuaJIT, and ASan+UBSan
# Both install what they need first (Debian packages, as root).

LUA ?= 5.4
JOBS ?= 2

.PHONY: all deps build test demo bench fuzz stress clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	cmake -S . -B build/$(LUA) -DDSS_LUA=$(LUA)
	cmake --build build/$(LUA) -j$(JOBS)

test: deps
	@bash scripts/test.sh

demo: deps
	@bash scripts/demo.sh

# Benchmarks against in-process ceilings and luv, as ratios measured in the
# same run: prints the table, writes bench/results/latest.md and plots.
bench: deps
	@bash bench/run.sh

# A long stress run (DSS_STRESS_LONG_SECONDS, default 600): prints its summary.
stress: deps
	cmake -S . -B build/stress -DDSS_LUA=5.4 -DDSS_STRESS=ON
	cmake --build build/stress -j$(JOBS) --target stress-long

# A long fuzzing run (DSS_FUZZ_SECONDS, default 1800) with libFuzzer.
fuzz: deps
	CC=clang CXX=clang++ cmake -S . -B build/fuzz -DDSS_LUA=5.4 -DDSS_FUZZ=ON \
	  -DDSS_UNIT_TESTS=OFF -DDSS_LUA_TESTS=OFF -DDSS_EXAMPLES=OFF -DDSS_STRESS=OFF \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build build/fuzz -j$(JOBS) --target fuzz-long

clean:
	rm -rf build
