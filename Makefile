# virtio-fs daemon crash reconnection for QEMU 7.2: the patch queue and its
# test bench.  Two commands do everything, as root on Debian 12:
#
#   make demo     build what is missing, boot a guest on the series' QEMU
#                 with a virtio-fs share and narrate the main job
#   make check    every test: workspace, unit, qtest, functional, avocado,
#                 fuzz, torture (20 kills), checkpatch, upstream (the QEMU
#                 half on Debian's newest QEMU, ./qemu-upstream)
#
# Other targets: torture (CYCLES=N, SEED=S: kill virtiofsd N times under
# guest load), bench (QUICK=1: smaller; writes docs/benchmarks.md), deps
# qemu build guest export-patches qemu-upstream build-upstream
# export-patches-upstream clean distclean help

SHELL := /bin/bash
TOP := $(CURDIR)

# ccache (Debian's package) for both QEMU trees.  QEMU's configure names
# the compiler itself, so meson adds no ccache; its masquerade directory
# first on PATH does.  Paths under the top directory are hashed relative
# to it and the working directory is left out of the hash, so a fresh
# clone elsewhere reuses what an earlier build compiled.
export PATH := /usr/lib/ccache:$(PATH)
export CCACHE_BASEDIR := $(TOP)
export CCACHE_NOHASHDIR := 1
QEMU_SRC := $(TOP)/qemu
QEMU_BUILD := $(QEMU_SRC)/build
GUEST_DIR := $(TOP)/build/guest
PYTHON := /usr/bin/python3

NINJA_TARGETS := all tests/qtest/qos-test tests/unit/test-char

.PHONY: help deps qemu build guest check demo torture bench export-patches \
        qemu-upstream build-upstream export-patches-upstream clean distclean

help:
	@sed -n '2,13p' Makefile | sed 's/^# \{0,1\}//'

# Debian packages the build and the tests need (apt-get, as root).
deps:
	@$(TOP)/scripts/install-deps.sh

# ./qemu: the pinned base plus the queue (see qemu-submodule/fetch.sh).
qemu: deps
	@$(TOP)/qemu-submodule/fetch.sh $(TOP)

# Configure (when needed) and build QEMU, virtiofsd and the qtests.
build: qemu
	@$(TOP)/configure-wrapper.sh $(QEMU_SRC) $(QEMU_BUILD)
	@echo "[build] ninja -C qemu/build ($(NINJA_TARGETS))"
	@$(TOP)/scripts/ninja-progress.sh $(QEMU_BUILD) $(NINJA_TARGETS)

# The guest: Debian's kernel, busybox-static, our workload.
GUEST_INPUTS := tests/guest/build-image.sh tests/guest/init.sh \
                tests/guest/workload.c tests/guest/Makefile

guest: $(GUEST_DIR)/initrd.img

$(GUEST_DIR)/initrd.img: $(GUEST_INPUTS) | deps
	@$(TOP)/tests/guest/build-image.sh $(GUEST_DIR)

# Write ./qemu's commits since the base tag back to patches/.
export-patches:
	@$(TOP)/qemu-submodule/export.sh

# The QEMU half on the newest QEMU Debian serves (qemu-submodule/
# pin-upstream): ./qemu-upstream with patches/upstream/ applied, built
# for its vhost-user qtests; make check's "upstream" stage uses it.
UPSTREAM_PIN := $(TOP)/qemu-submodule/pin-upstream
UPSTREAM_SRC := $(TOP)/qemu-upstream
UPSTREAM_TARGETS := qemu-system-x86_64 tests/qtest/qos-test

qemu-upstream: deps
	@$(TOP)/qemu-submodule/fetch.sh $(TOP) $(UPSTREAM_PIN)

build-upstream: qemu-upstream
	@$(TOP)/configure-wrapper.sh $(UPSTREAM_SRC) $(UPSTREAM_SRC)/build
	@echo "[build] ninja -C qemu-upstream/build ($(UPSTREAM_TARGETS))"
	@$(TOP)/scripts/ninja-progress.sh $(UPSTREAM_SRC)/build $(UPSTREAM_TARGETS)

export-patches-upstream:
	@$(TOP)/qemu-submodule/export.sh $(UPSTREAM_PIN)

# STAGE=workspace alone needs no build, no root and no network; the
# upstream stage also needs the upstream tree built.
CHECK_STAGES := $(or $(STAGE),all)
CHECK_DEPS := $(if $(filter-out workspace,$(CHECK_STAGES)),build guest) \
              $(if $(filter all upstream,$(CHECK_STAGES)),build-upstream)
check: $(CHECK_DEPS)
	@$(PYTHON) $(TOP)/tests/run-check.py $(if $(STAGE),$(addprefix --stage ,$(STAGE))) $(if $(K),-k $(K))

demo: build guest
	@$(PYTHON) $(TOP)/tests/demo.py

# Ends with "torture: N cycles, E io-errors, M mismatches, H hung,
# L leaked-fds, F fio-errors, S stress-errors, C daemon-crashes"; fails
# unless N is CYCLES and all the others are 0.
CYCLES ?= 100
SEED ?= 1
torture: build guest
	@$(PYTHON) $(TOP)/tests/torture/torture.py --cycles $(CYCLES) --seed $(SEED)

# Stall per restart, steady-state cost, restore scaling: docs/benchmarks.md
bench: build guest
	@$(PYTHON) $(TOP)/tests/bench/bench.py $(if $(QUICK),--quick)

clean:
	rm -rf $(TOP)/build $(QEMU_BUILD) $(TOP)/qemu-upstream/build
	$(MAKE) -C tests/guest clean

distclean: clean
	rm -rf $(TOP)/.cache
	@echo "./qemu is left alone: remove it by hand once its work is exported"
