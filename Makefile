# remora: one build for the runner, the library, the examples and the tests.
#   make            build build/remora and build/libremora.a
#   make run        install missing packages, build, start the demo server
#   make test       install missing packages, build, run every test
#   make test-asan  the whole suite under AddressSanitizer + UBSan (build-asan/)
#   make test-tsan  the thread tests under ThreadSanitizer (build-tsan/)

BUILD   ?= build
CC      ?= cc
OPT     ?= -O2 -g
SAN     ?=
CFLAGS  += $(OPT) $(SAN) -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Iinclude -I. -MMD -MP
LDFLAGS += $(SAN)

LUA_CFLAGS := $(shell pkg-config --cflags lua5.4 2>/dev/null)
LUA_LIBS   := $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4)
TLS_LIBS   := -lmbedtls -lmbedx509 -lmbedcrypto
X11_LIBS   := -lX11 -lXext -lXdamage -lXtst -ljpeg
LIBS       := $(LUA_LIBS) $(TLS_LIBS) -lz -lpthread -lm -ldl

# Each layer is a folder; every .c in it belongs to libremora (lua/main.c is the runner).
LAYERS     := dispatcher threadpool tls ws http lua
LIB_SRC    := $(filter-out lua/main.c,$(foreach l,$(LAYERS),$(wildcard $(l)/*.c)))
LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
SCREEN_SRC := $(wildcard screen/*.c)
SCREEN_OBJ := $(SCREEN_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all deps run test test-asan test-tsan clean
all: $(BUILD)/remora $(BUILD)/libremora.a $(UNIT_BIN)

deps:
	@sh mk/deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LUA_CFLAGS) -c $< -o $@

$(BUILD)/libremora.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libremora_screen.a: $(SCREEN_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/remora: $(BUILD)/obj/lua/main.o $(BUILD)/libremora.a $(BUILD)/libremora_screen.a
	$(CC) $(LDFLAGS) -o $@ $^ $(X11_LIBS) $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libremora.a $(BUILD)/libremora_screen.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LUA_CFLAGS) $(LDFLAGS) -o $@ $^ $(X11_LIBS) $(LIBS)

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
	REMORA_SANITIZER=tsan REMORA_TESTS=thread sh tests/run.sh build-tsan

clean:
	rm -rf build build-asan build-tsan

-include $(LIB_OBJ:.o=.d) $(SCREEN_OBJ:.o=.d) $(BUILD)/obj/lua/main.d
