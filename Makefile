# Trireme — build, test and run. Every target installs the system packages it needs.
SHELL := /bin/bash
# Cargo's target dir lives outside the clone so CI and later sessions reuse the RocksDB build.
export CARGO_TARGET_DIR ?= /var/tmp/trireme-target
export CARGO_TERM_COLOR ?= never
CARGO ?= cargo
# libclang-dev: bindgen for RocksDB's bindings. etcd-client: etcdctl for end-to-end tests.
# busybox-static: the static busybox the Docker runtime's tests put in a locally built image.
# systemd: systemd-analyze, which checks the units in deploy/systemd.
APT_PACKAGES := libclang-dev etcd-client busybox-static systemd
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps build test verify fix run bench doc chaos chaos-long image

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

build: deps
	$(CARGO) build --workspace --all-targets

# Style is part of every test run (CI runs `make test`): formatting and clippy first, then every
# test. `make verify` adds the docs.
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace --no-fail-fast

verify: test
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

fix: deps
	$(CARGO) fmt --all
	$(CARGO) clippy --workspace --all-targets --fix --allow-dirty --allow-staged

doc: deps
	$(CARGO) doc --workspace --no-deps

run: deps
	$(CARGO) build -p trireme
	$(CARGO_TARGET_DIR)/debug/trireme up

# etcd-server: the etcd 3.4 that the benchmark runs next to Trireme. The benchmark runs release
# builds (the first `make bench` on a machine compiles RocksDB once more, 15-25 minutes).
bench: deps
	@dpkg -s etcd-server >/dev/null 2>&1 || { $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q etcd-server; }
	$(CARGO) build --release -p trireme -p trireme-bench
	$(CARGO_TARGET_DIR)/release/trireme-bench $(BENCH_ARGS)

# The container image trireme:dev, built locally from the release binary with no registry
# (deploy/image/build.sh; deploy/compose runs it). Same build as `make bench`.
image: deps
	$(CARGO) build --release -p trireme -p trireme-bench
	deploy/image/build.sh $(CARGO_TARGET_DIR)/release/trireme trireme:dev

# The chaos suite (chaos/, docs/chaos.md): real masters and nodes under kills, pauses and
# partitions, the histories checked afterwards. SEED empty: a random one, printed first.
SEED ?=
chaos: DURATION ?= 10m
chaos: deps
	$(CARGO) build -p trireme -p trireme-chaos
	$(CARGO_TARGET_DIR)/debug/trireme-chaos --profile long $(if $(SEED),--seed $(SEED)) --duration $(DURATION)

chaos-long: DURATION ?= 4h
chaos-long: deps
	$(CARGO) build -p trireme -p trireme-chaos
	$(CARGO_TARGET_DIR)/debug/trireme-chaos --profile long $(if $(SEED),--seed $(SEED)) --duration $(DURATION)
