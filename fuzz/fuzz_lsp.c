/* libFuzzer harness for the LSP compiler (rm_lsp_compile, lua/lsp.c).
 *
 *   make fuzz              (or: make build-fuzz/fuzz_lsp && build-fuzz/fuzz_lsp fuzz/corpus/lsp)
 *
 * The input is a page. It must compile to a Lua chunk or give an error
 * message, never crash. A page without "<?lsp" is all text: it must compile,
 * and running it must emit exactly its bytes (so no text can escape the
 * string literal the compiler puts it in and become code). A page whose
 * only tags are `<?lsp ?>` (empty) must emit its text the same way.
 */
#include <stdint.h>
#include <string.h>
#include <lauxlib.h>
#include <lualib.h>
#include "lua/lhttp.h"

static void must(int cond) {
  if (!cond) __builtin_trap();
}

/* _emit(s): appends s to the page's output, the global "out". */
static int emit(lua_State *L) {
  lua_getglobal(L, "out");
  lua_pushvalue(L, 1);
  lua_concat(L, 2);
  lua_setglobal(L, "out");
  return 0;
}

/* Page text with every empty tag removed: what the page must emit. */
static size_t strip_empty_tags(const char *in, size_t n, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    if (n - i >= 8 && memcmp(in + i, "<?lsp ?>", 8) == 0) { i += 8; continue; }
    out[o++] = in[i++];
  }
  return o;
}

static int has_tag_left(const char *p, size_t n) {
  for (size_t i = 0; i + 5 <= n; i++)
    if (memcmp(p + i, "<?lsp", 5) == 0) return 1;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char want[1 << 16];
  const char *src = (const char *)data;
  if (size > sizeof want) return 0;
  lua_State *L = luaL_newstate();
  size_t nwant = strip_empty_tags(src, size, want);
  int plain = !has_tag_left(want, nwant);
  if (rm_lsp_compile(L, src, size, "=page") == 0) {
    lua_newtable(L);                    /* the page's _ENV */
    lua_pushcfunction(L, emit);
    lua_setfield(L, -2, "_emit");
    lua_pushliteral(L, "");
    lua_setglobal(L, "out");
    if (plain) {                        /* text only: it runs and says itself */
      must(lua_pcall(L, 1, 0, 0) == LUA_OK);
      size_t n;
      lua_getglobal(L, "out");
      const char *got = lua_tolstring(L, -1, &n);
      must(n == nwant && memcmp(got, want, n) == 0);
    }
  } else {
    must(!plain);                       /* only code can fail to compile */
    must(lua_type(L, -1) == LUA_TSTRING);
  }
  lua_close(L);
  return 0;
}
