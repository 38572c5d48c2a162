# A thin wrapper over CMake. `make test` and `make demo` set the machine up first.
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all build install test test-unit test-asan test-tsan test-rgw chaos bench demo format clean

all: build

build:
	@scripts/deps.sh build
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	cmake --build build -j $(JOBS)

# make install [PREFIX=/usr/local] [DESTDIR=staging dir]: cmake --install of the
# RelWithDebInfo build (libraries, header, programs, pkg-config file, CMake package,
# systemd unit, docs). PREFIX is where the files will live; DESTDIR only stages them.
PREFIX ?= /usr/local
install:
	@scripts/deps.sh build
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX="$(PREFIX)" $(CMAKE_FLAGS) >/dev/null
	cmake --build build -j $(JOBS)
	DESTDIR="$(DESTDIR)" cmake --install build

# Unit and integration tests, then the same built with ASan+UBSan, then the
# concurrency tests built with TSan. Each ctest run prints its own summary.
test: test-unit test-asan test-tsan

test-unit:
	@scripts/deps.sh test
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	cmake --build build -j $(JOBS)
	scripts/ctest.sh build

test-asan:
	@scripts/deps.sh test
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DS3C_SANITIZE=address $(CMAKE_FLAGS) >/dev/null
	cmake --build build-asan -j $(JOBS)
	scripts/ctest.sh build-asan

test-tsan:
	@scripts/deps.sh test
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DS3C_SANITIZE=thread $(CMAKE_FLAGS) >/dev/null
	cmake --build build-tsan -j $(JOBS)
	scripts/ctest.sh build-tsan -L concurrency

# Only the tests against Ceph RGW (docs/rgw.md); the first run as root installs Ceph.
test-rgw: build
	scripts/ctest.sh build -L rgw

# The chaos suite (tests/chaos, docs/reliability.md), not in CI: random seeds of EPISODE
# seconds of combined faults each until DURATION seconds have passed, each seed printed;
# `make chaos SEED=N [EPISODE=60]` replays one (same seed, same schedule).
DURATION ?= 600
EPISODE ?= 60
chaos: build
	python3 tests/chaos/chaos.py --bin build/bin --duration $(EPISODE) \
	  $(if $(SEED),--seed $(SEED),--total $(DURATION)) $(CHAOS_ARGS)

bench: build
	@scripts/deps.sh bench
	@for b in build/bin/bench-*; do echo "# $$b" >&2; $$b || exit 1; done

demo: build
	@scripts/deps.sh demo
	scripts/demo.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-tsan
