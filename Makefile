# fleethub build. `make` builds build/fleethub; `make test` installs what is
# missing (scripts/deps.sh), builds, and runs every test; `make run` starts the
# server with its embedded defaults. SANITIZE=address,undefined builds into
# build/san with the sanitizers on. `make loadgen` builds the load generator
# (build/loadgen) and `make bench-quick` runs the benchmark smoke test
# (bench/README.md); `make soak` runs the 30-minute soak (SOAK_SECONDS to
# shorten it; tests/soak/run.sh); none of them is part of `make test`.

CC ?= gcc
PKGS := libuv openssl libcurl sqlite3 jansson inih libpq libqpid-proton
SANITIZE ?=

ifeq ($(SANITIZE),)
BUILD := build
SANFLAGS :=
else
BUILD := build/san
SANFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif

WARN := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CFLAGS ?= -O2 -g
ALL_CFLAGS := -std=c17 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(SANFLAGS) -Isrc \
	$(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser -lpthread -lm
TEST_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

LIB_SRC := $(filter-out src/server/main.c,$(wildcard src/*/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
# Shared test code (servers and helpers), linked into every unit test.
SUPPORT_SRC := $(wildcard tests/unit/support/*.c)
SUPPORT_OBJ := $(SUPPORT_SRC:%.c=$(BUILD)/obj/%.o)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES := $(FUZZ_SRC:tests/fuzz/fuzz_%.c=%)
REPLAY_BIN := $(FUZZ_NAMES:%=$(BUILD)/tests/replay_%)

# The load generator (bench/): its own sources plus the pure layers (base/,
# codec/) of the library; never net/, server/ or anything with state.
BENCH_SRC := $(filter-out bench/pgraw.c,$(wildcard bench/*.c))
BENCH_OBJ := $(BENCH_SRC:%.c=$(BUILD)/obj/%.o)
BENCH_LIB_OBJ := $(filter $(BUILD)/obj/src/base/% $(BUILD)/obj/src/codec/%,$(LIB_OBJ)) \
	$(BUILD)/obj/src/core/tpm.o

.PHONY: layers all deps deps-run run test unit unit-pg replay interop fuzz fuzz-smoke clean format loadgen bench \
	bench-quick soak

all: $(BUILD)/fleethub

# deps: everything the tests need (Debian packages and the npm test
# clients); deps-run: only what building and running the server needs, so
# `make run` works offline once the Debian packages are there.
deps:
	@scripts/deps.sh

deps-run:
	@scripts/deps.sh run

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libfleethub.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/fleethub: $(BUILD)/obj/src/server/main.o $(BUILD)/libfleethub.a
	$(CC) $(ALL_CFLAGS) $^ $(LIBS) -o $@

$(BUILD)/tests/test_%: tests/unit/test_%.c $(SUPPORT_OBJ) $(wildcard tests/unit/support/*.h) \
		$(BUILD)/libfleethub.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $< $(SUPPORT_OBJ) $(BUILD)/libfleethub.a $(LIBS) $(TEST_LIBS) -o $@

# Each fuzz target is also linked with a small main that replays its corpus,
# so `make test` runs every committed input through the sanitizer-free (or
# SANITIZE=) build without needing libFuzzer.
$(BUILD)/tests/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay_main.c $(BUILD)/libfleethub.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $< tests/fuzz/replay_main.c $(BUILD)/libfleethub.a $(LIBS) -o $@

# The fault-injection library the disk-fault test preloads into the server
# (tests/faults/faultfs.c). Never instrumented: it sits in front of the
# sanitizer runtime's own interceptors.
# dbcheck runs PRAGMA integrity_check on a database the test left.
FAULTFS := $(BUILD)/tests/faultfs.so
DBCHECK := $(BUILD)/tests/dbcheck
$(FAULTFS): tests/faults/faultfs.c
	@mkdir -p $(dir $@)
	$(CC) -std=c17 -D_GNU_SOURCE $(WARN) $(CFLAGS) -fPIC -shared $< -ldl -o $@

$(DBCHECK): tests/faults/dbcheck.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $< $(LIBS) -o $@

# dbfill writes many registration states into a stopped server's database.
DBFILL := $(BUILD)/tests/dbfill
$(DBFILL): tests/faults/dbfill.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $< $(LIBS) -o $@

$(BUILD)/loadgen: $(BENCH_OBJ) $(BENCH_LIB_OBJ)
	$(CC) $(ALL_CFLAGS) $^ $(LIBS) -o $@

loadgen: $(BUILD)/loadgen $(BUILD)/pgraw

# The PostgreSQL reference of the bench (bench/pgraw.c): libpq only.
$(BUILD)/pgraw: bench/pgraw.c
	$(CC) $(ALL_CFLAGS) $< $(shell pkg-config --libs libpq) -o $@

# Benchmarks are never part of `make test`. bench-quick: every scenario
# briefly, as a smoke test of the generator and the harness (bench/run.sh).
bench-quick: deps $(BUILD)/fleethub $(BUILD)/loadgen $(BUILD)/pgraw
	BUILD_DIR=$(CURDIR)/$(BUILD) bench/run.sh quick

bench: deps $(BUILD)/fleethub $(BUILD)/loadgen $(BUILD)/pgraw
	BUILD_DIR=$(CURDIR)/$(BUILD) bench/run.sh full

# The soak: connection churn, REST and registrations against the real
# binary on 127.0.0.20 for SOAK_SECONDS (default 1800); RSS and descriptors
# must stay flat. Results in $(BUILD)/soak/.
soak: deps $(BUILD)/fleethub
	FLEETHUB_BIN=$(CURDIR)/$(BUILD)/fleethub BUILD_DIR=$(CURDIR)/$(BUILD) \
		FLEETHUB_SANITIZED=$(SANITIZE) tests/soak/run.sh

run: deps-run
	@$(MAKE) --no-print-directory $(BUILD)/fleethub
	./$(BUILD)/fleethub serve

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

# The store's backend-neutral cases again, on a PostgreSQL cluster started
# for them (scripts/pg-dev.sh; the interop suite's is on another port).
unit-pg: $(BUILD)/tests/test_store
	@dir=$(CURDIR)/$(BUILD)/unit-pg; \
	pg=$$(scripts/pg-dev.sh start $$dir 55431) || exit 1; \
	echo "== $(BUILD)/tests/test_store on PostgreSQL"; \
	FLEETHUB_TEST_PG="$$pg" $(BUILD)/tests/test_store; rc=$$?; \
	scripts/pg-dev.sh stop $$dir; exit $$rc

replay: $(REPLAY_BIN)
	@set -e; for n in $(FUZZ_NAMES); do \
		echo "== replay $$n"; $(BUILD)/tests/replay_$$n tests/fuzz/corpus/$$n; done

# The interop suite runs twice: on the embedded SQLite store, then with
# every server on a PostgreSQL cluster the suite starts (scripts/pg-dev.sh).
INTEROP_ENV = FLEETHUB_BIN=$(CURDIR)/$(BUILD)/fleethub BUILD_DIR=$(CURDIR)/$(BUILD) \
	FLEETHUB_FAULTFS=$(CURDIR)/$(FAULTFS) FLEETHUB_DBCHECK=$(CURDIR)/$(DBCHECK) \
	FLEETHUB_DBFILL=$(CURDIR)/$(DBFILL) FLEETHUB_SANITIZED=$(SANITIZE)

interop: $(BUILD)/fleethub $(FAULTFS) $(DBCHECK) $(DBFILL)
	$(INTEROP_ENV) tests/interop/run.sh
	$(INTEROP_ENV) FLEETHUB_TEST_STORE=postgresql tests/interop/run.sh

test: deps layers
	@$(MAKE) --no-print-directory all unit unit-pg replay
	@$(MAKE) --no-print-directory interop

# What the layers may not do (style.md, decisions.md 1): no synchronous
# store reads outside the store.
layers:
	@if grep -n 'store_reader *(' $(filter-out src/store/%,$(wildcard src/*/*.c)); then \
		echo "layers: src/ reads the store synchronously (use store_read)"; exit 1; fi

# libFuzzer builds (clang), with ASan and UBSan.
FUZZ_CC := clang
FUZZ_FLAGS := -std=c17 -D_GNU_SOURCE -g -O1 -Isrc -fsanitize=fuzzer,address,undefined \
	$(shell pkg-config --cflags $(PKGS) 2>/dev/null)
FUZZ_LIB_SRC := $(LIB_SRC)

fuzz: $(FUZZ_NAMES:%=build/fuzz/fuzz_%)

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB_SRC)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer $< $(FUZZ_LIB_SRC) $(LIBS) -o $@

FUZZ_SECONDS ?= 30
fuzz-smoke: fuzz
	@set -e; for n in $(FUZZ_NAMES); do \
		mkdir -p build/fuzz/work_$$n; \
		build/fuzz/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) build/fuzz/work_$$n tests/fuzz/corpus/$$n; done

format:
	clang-format -i $(wildcard src/*/*.[ch] tests/unit/*.c tests/unit/support/*.[ch] tests/fuzz/*.c bench/*.[ch])

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(BUILD)/obj/src/server/main.d $(SUPPORT_OBJ:.o=.d) $(BENCH_OBJ:.o=.d)
