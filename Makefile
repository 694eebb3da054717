# remora: one build for the runner, the library, the examples and the tests.
#   make            build build/remora and build/libremora.a
#   make run        install missing packages, build, start the demo server
#   make test       install missing packages, build, run every test
#   make test-asan  the whole suite under AddressSanitizer + UBSan (build-asan/)
#   make test-tsan  the thread tests and the screen engine's (encoder, echo lane) under ThreadSanitizer (build-tsan/)
#   make examples   the embedding hosts (build/examples/)
#   make size       code size, idle RSS and bytes per idle connection, as a table
#   make bench      remora against its peers (nginx, HAProxy, node ws), bench/results/latest.md
#   make bench-tls  TLS handshakes per second (full, resumed): remora vs nginx
#   make bench-screen  screen sharing: remora's app vs x11vnc + noVNC in headless Chromium
#   make fuzz       each libFuzzer harness for FUZZ_SECONDS (default 60), clang + ASan/UBSan
#   make soak       mixed HTTP/WebSocket/proxy/slow clients for SOAK_SECONDS (default 300)
# Build options: WITH_TLS=0, WITH_WS=0, WITH_LUA=0 leave that layer (and what
# needs it) out of the library, the tests and the link. WITH_LUA=0 builds no
# runner: the library, the dispatcher-only host and the C tests remain.

BUILD   ?= build
CC      ?= cc
OPT     ?= -O2 -g
SAN     ?=
CFLAGS  += $(OPT) $(SAN) -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Iinclude -I. -MMD -MP
LDFLAGS += $(SAN)

WITH_TLS ?= 1
WITH_WS  ?= 1
WITH_LUA ?= 1
ifeq ($(WITH_LUA),1)
ifneq ($(WITH_TLS)$(WITH_WS),11)
$(error WITH_LUA=1 needs WITH_TLS=1 and WITH_WS=1 (the Lua bindings use both); add WITH_LUA=0)
endif
endif

LUA_CFLAGS := $(shell pkg-config --cflags lua5.4 2>/dev/null)
LUA_LIBS   := $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4) -ldl
TLS_LIBS   := -lmbedtls -lmbedx509 -lmbedcrypto
X11_LIBS   := -lX11 -lXext -lXdamage -lXtst -ljpeg
LIBS       := $(if $(filter 1,$(WITH_LUA)),$(LUA_LIBS)) $(if $(filter 1,$(WITH_TLS)),$(TLS_LIBS)) -lz -lpthread -lm

# Each layer is a folder; every .c in it belongs to libremora (lua/main.c is the runner).
# A layer left out takes its unit tests (tests/unit/test_LAYER*.c) with it; screen/ is a Lua module.
LAYERS     := dispatcher threadpool http $(if $(filter 1,$(WITH_TLS)),tls) $(if $(filter 1,$(WITH_WS)),ws) \
              $(if $(filter 1,$(WITH_LUA)),lua)
LEFT_OUT   := $(filter-out $(LAYERS),tls ws lua) $(if $(filter 1,$(WITH_LUA)),,screen)
LIB_SRC    := $(filter-out lua/main.c,$(foreach l,$(LAYERS),$(wildcard $(l)/*.c)))
LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
LOOP_OBJ   := $(filter $(BUILD)/obj/dispatcher/%,$(LIB_OBJ))
SCREEN_SRC := $(wildcard screen/*.c)
SCREEN_OBJ := $(SCREEN_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC   := $(filter-out $(LEFT_OUT:%=tests/unit/test_%%),$(wildcard tests/unit/test_*.c))
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
# The embedding hosts: arena links the dispatcher alone, firmware the runtime with Lua.
EXAMPLES   := $(BUILD)/examples/arena $(if $(filter 1,$(WITH_LUA)),$(BUILD)/examples/firmware)
RUNNER     := $(if $(filter 1,$(WITH_LUA)),$(BUILD)/remora)
SCREEN_LIB := $(if $(filter 1,$(WITH_LUA)),$(BUILD)/libremora_screen.a)
UNIT_LIBS  := $(if $(filter 1,$(WITH_LUA)),$(X11_LIBS)) $(LIBS)

.PHONY: all deps run test test-asan test-tsan clean examples size fuzz soak
all: $(RUNNER) $(BUILD)/libremora.a $(UNIT_BIN) examples

deps:
	@sh mk/deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LUA_CFLAGS) -c $< -o $@

$(BUILD)/libremora.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# The dispatcher alone: what a firmware host links when it needs nothing else.
$(BUILD)/libremora_dispatcher.a: $(LOOP_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libremora_screen.a: $(SCREEN_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# The screen module uses the Lua runtime: its archive comes first so the
# linker still looks in libremora.a for what it needs.
$(BUILD)/remora: $(BUILD)/obj/lua/main.o $(BUILD)/libremora_screen.a $(BUILD)/libremora.a
	$(CC) $(LDFLAGS) -o $@ $^ $(X11_LIBS) $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(SCREEN_LIB) $(BUILD)/libremora.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LUA_CFLAGS) $(LDFLAGS) -o $@ $^ $(UNIT_LIBS)

examples: $(EXAMPLES)

$(BUILD)/examples/arena: $(BUILD)/obj/examples/embed/arena.o $(BUILD)/obj/examples/embed/proto.o \
                         $(BUILD)/libremora_dispatcher.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lpthread

$(BUILD)/examples/firmware: $(BUILD)/obj/examples/embed/firmware.o $(BUILD)/obj/examples/embed/proto.o \
                            $(BUILD)/libremora.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

size: all $(BUILD)/libremora_dispatcher.a
	@/usr/bin/python3 examples/embed/size.py $(BUILD)

run: deps
	@$(MAKE) --no-print-directory all
	sh examples/run-demo.sh $(BUILD)

test: deps
	@$(MAKE) --no-print-directory all
	sh tests/run.sh $(BUILD)

test-asan: deps
	@$(MAKE) --no-print-directory all BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
	REMORA_SANITIZER=asan sh tests/run.sh build-asan

test-tsan: deps
	@$(MAKE) --no-print-directory all BUILD=build-tsan OPT="-O1 -g" SAN="-fsanitize=thread"
	REMORA_SANITIZER=tsan REMORA_TESTS="thread tests/test_screen" sh tests/run.sh build-tsan

# Fuzzing: harnesses link only the pure code they drive. New inputs go to
# build-fuzz/corpus-NAME (the checked-in seeds stay as they are); a crash
# leaves build-fuzz/crash-NAME-* and stops the run.
FUZZ_SECONDS ?= 60
FUZZ_FLAGS   := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
                -std=gnu11 -D_GNU_SOURCE -Iinclude -I.
HTTP_PURE    := http/parser.c http/fields.c http/url.c http/content.c http/multipart.c http/response.c
FUZZ_NAMES   := http url ws lsp

build-fuzz/fuzz_http build-fuzz/fuzz_url: build-fuzz/fuzz_%: fuzz/fuzz_%.c $(HTTP_PURE)
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) $^ -o $@
build-fuzz/fuzz_ws: fuzz/fuzz_ws.c $(wildcard ws/*.c)
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) $^ -lmbedcrypto -lz -o $@
build-fuzz/fuzz_lsp: fuzz/fuzz_lsp.c lua/lsp.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) $(LUA_CFLAGS) $^ $(LUA_LIBS) -o $@

fuzz: deps $(FUZZ_NAMES:%=build-fuzz/fuzz_%)
	@for n in $(FUZZ_NAMES); do \
	  mkdir -p build-fuzz/corpus-$$n; \
	  echo "fuzz $$n: $(FUZZ_SECONDS) s"; \
	  build-fuzz/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=build-fuzz/crash-$$n- build-fuzz/corpus-$$n fuzz/corpus/$$n 2>build-fuzz/$$n.log \
	    || { tail -60 build-fuzz/$$n.log; exit 1; }; \
	  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" build-fuzz/$$n.log; \
	done

# The long run: bounded, loopback only (tests/soak/soak.py says what it mixes).
SOAK_SECONDS ?= 300
soak: deps
	@$(MAKE) --no-print-directory all
	REMORA_BIN=$(CURDIR)/$(BUILD)/remora /usr/bin/python3 tests/soak/soak.py $(SOAK_SECONDS)

.PHONY: bench-tls
bench-tls: $(RUNNER)
	/usr/bin/python3 bench/tls/bench.py $(BENCH_SECONDS)

# Proxy throughput (GB/s) against nginx stream and HAProxy, loopback as the ceiling.
.PHONY: bench-proxy
bench-proxy: $(RUNNER)
	sh bench/proxy/run.sh $(BUILD)

# WebSocket echo (msgs/s, p99) of 64 B and 16 KiB messages over 100 connections, against node ws.
.PHONY: bench-ws
bench-ws: $(RUNNER)
	REMORA_BIN=$(CURDIR)/$(BUILD)/remora /usr/bin/python3 bench/websocket/bench.py

.PHONY: bench-screen
bench-screen: $(RUNNER)
	REMORA_BIN=$(CURDIR)/$(BUILD)/remora /usr/bin/python3 bench/screen/bench.py

.PHONY: bench
bench: deps
	@$(MAKE) --no-print-directory all
	/usr/bin/python3 bench/run.py

clean:
	rm -rf build build-asan build-tsan build-fuzz

-include $(LIB_OBJ:.o=.d) $(SCREEN_OBJ:.o=.d) $(BUILD)/obj/lua/main.d $(wildcard $(BUILD)/obj/examples/embed/*.d)
