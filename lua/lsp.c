/* lua/lsp.c: Lua Server Pages.
 *
 * A page is text with Lua in it: `<?lsp code ?>` runs code, `<?lsp= expr ?>`
 * emits tostring(expr), and all other text is emitted as it is. The compiler
 * turns a page into one Lua chunk, "local page, _ENV = _ENV, ...;" followed by the code
 * and _emit("text") calls, keeping every newline where it was so that error
 * messages name the page's own line numbers. The chunk's own upvalue (the
 * _ENV it was loaded with) becomes the local `page`: the loader sets it to
 * the page's persistent table, so no request has to put it in its
 * environment. Inside code, strings and long
 * comments are skipped while looking for `?>`, so a "?>" in a Lua string does
 * not end the block.
 *
 * Compiled pages are cached in the registry by file name, with the file's
 * modification time and size: a changed file is compiled again on its next
 * request, and keeps its `page` table.
 */
#include <string.h>
#include <sys/stat.h>
#include "lua/lhttp.h"

static const char CACHE_KEY = 'L';   /* registry key: its address */

/* Emits text as a Lua string literal. Newlines stay newlines in the source
 * (escaped with '\'), so line numbers match the page. */
static void add_text(luaL_Buffer *b, const char *p, size_t n) {
  if (n == 0) return;
  luaL_addstring(b, "_emit\"");
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c == '"' || c == '\\') { luaL_addchar(b, '\\'); luaL_addchar(b, (char)c); }
    else if (c == '\n') luaL_addstring(b, "\\\n");
    else if (c < 32 && c != '\t') {
      char esc[8];
      snprintf(esc, sizeof esc, "\\%03u", c);
      luaL_addstring(b, esc);
    } else luaL_addchar(b, (char)c);
  }
  luaL_addstring(b, "\" ");
}

/* The level of a long bracket at p ("[[" 0, "[==[" 2), or -1. */
static int long_bracket(const char *p, const char *end) {
  if (p >= end || *p != '[') return -1;
  int level = 0;
  for (p++; p < end && *p == '='; p++) level++;
  return p < end && *p == '[' ? level : -1;
}

/* Past the long string opened at p with the given level, or end. */
static const char *skip_long(const char *p, const char *end, int level) {
  p += level + 2;
  for (; p < end; p++) {
    if (*p != ']') continue;
    const char *q = p + 1;
    int l = 0;
    while (q < end && *q == '=') { q++; l++; }
    if (l == level && q < end && *q == ']') return q + 1;
  }
  return end;
}

/* The "?>" that ends the code starting at p, or NULL; *cut is where the code
 * to keep ends. Short strings, long strings and long comments are skipped; a
 * line comment ends at "?>" too, so that `<?lsp -- note ?>` closes where it
 * looks like it does, and the comment is cut (it would swallow what the
 * compiler puts after the code on the same line). */
static const char *code_end(const char *p, const char *end, const char **cut) {
  while (p < end) {
    char c = *p;
    if (c == '?' && p + 1 < end && p[1] == '>') { *cut = p; return p; }
    if (c == '"' || c == '\'') {
      for (p++; p < end && *p != c && *p != '\n'; p++)
        if (*p == '\\' && p + 1 < end) p++;
      p++;
    } else if (c == '[' && long_bracket(p, end) >= 0) {
      p = skip_long(p, end, long_bracket(p, end));
    } else if (c == '-' && p + 1 < end && p[1] == '-') {
      const char *comment = p;
      p += 2;
      int level = long_bracket(p, end);
      if (level >= 0) { p = skip_long(p, end, level); continue; }
      for (; p < end && *p != '\n'; p++)
        if (*p == '?' && p + 1 < end && p[1] == '>') { *cut = comment; return p; }
    } else {
      p++;
    }
  }
  return NULL;
}

int rm_lsp_compile(lua_State *L, const char *src, size_t len, const char *chunkname) {
  luaL_Buffer b;
  const char *p = src, *end = src + len;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "local page, _ENV = _ENV, ...; ");
  while (p < end) {
    const char *tag = NULL;
    for (const char *q = p; (q = memchr(q, '<', (size_t)(end - q))) != NULL; q++)
      if (end - q >= 5 && memcmp(q, "<?lsp", 5) == 0) { tag = q; break; }
    if (!tag) { add_text(&b, p, (size_t)(end - p)); break; }
    add_text(&b, p, (size_t)(tag - p));
    const char *code = tag + 5;
    int expr = code < end && *code == '=';
    if (expr) code++;
    const char *cut, *stop = code_end(code, end, &cut);
    if (!stop) {
      luaL_pushresult(&b);
      lua_pop(L, 1);
      int line = 1;
      for (const char *q = src; q < tag; q++) line += *q == '\n';
      lua_pushfstring(L, "%s:%d: <?lsp without its ?>", chunkname + (*chunkname == '@'), line);
      return -1;
    }
    if (expr) luaL_addstring(&b, "_emit(");
    luaL_addlstring(&b, code, (size_t)(cut - code));
    luaL_addstring(&b, expr ? ") " : " ");
    p = stop + 2;
  }
  luaL_pushresult(&b);
  size_t n;
  const char *lua = lua_tolstring(L, -1, &n);
  int rc = luaL_loadbuffer(L, lua, n, chunkname);
  lua_remove(L, -2);
  return rc == LUA_OK ? 0 : -1;
}

/* Reads a whole file as a Lua string (pushed), or pushes an error. */
static int read_file(lua_State *L, const char *file, size_t size) {
  FILE *f = fopen(file, "rb");
  if (!f) { lua_pushfstring(L, "cannot open %s", file); return -1; }
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, size);
  size_t n = fread(p, 1, size, f);
  fclose(f);
  luaL_pushresultsize(&b, n);
  return 0;
}

/* Leaves only the value on top (fn) above base. */
static int keep_top(lua_State *L, int base) {
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
  return 0;
}

/* Leaves only the error message on top above base. */
static int fail(lua_State *L, int base) {
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
  return -1;
}

int rm_lsp_load(lua_State *L, const char *file) { return rm_lsp_load_stat(L, file, NULL); }

int rm_lsp_load_stat(lua_State *L, const char *file, const struct stat *known) {
  struct stat own;
  int base = lua_gettop(L);
  if (!known && stat(file, &own) != 0) { lua_pushfstring(L, "%s: not found", file); return -1; }
  const struct stat st = known ? *known : own;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CACHE_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &CACHE_KEY);
  }
  int cache = base + 1, entry = base + 2;   /* entry: {fn, page, stamp, size} or nil */
  lua_Number stamp = (lua_Number)st.st_mtim.tv_sec * 1e9 + (lua_Number)st.st_mtim.tv_nsec;
  if (lua_getfield(L, cache, file) == LUA_TTABLE) {
    lua_rawgeti(L, entry, 3);
    lua_rawgeti(L, entry, 4);
    int fresh = lua_tonumber(L, -2) == stamp && lua_tointeger(L, -1) == (lua_Integer)st.st_size;
    lua_pop(L, 2);
    if (fresh) {
      lua_rawgeti(L, entry, 1);
      return keep_top(L, base);
    }
  }
  if (read_file(L, file, (size_t)st.st_size) != 0) return fail(L, base);
  size_t len;
  const char *src = lua_tolstring(L, -1, &len);
  lua_pushfstring(L, "@%s", file);
  if (rm_lsp_compile(L, src, len, lua_tostring(L, -1)) != 0) return fail(L, base);
  int fn = lua_gettop(L);
  lua_createtable(L, 4, 0);
  lua_pushvalue(L, fn);
  lua_rawseti(L, -2, 1);
  if (lua_istable(L, entry)) lua_rawgeti(L, entry, 2); else lua_newtable(L);   /* page survives edits */
  int page = lua_gettop(L);
  lua_pushvalue(L, page);
  lua_setupvalue(L, fn, 1);   /* the chunk's `page` */
  lua_pushvalue(L, page);
  lua_rawseti(L, -3, 2);
  lua_pushnumber(L, stamp);
  lua_rawseti(L, -3, 3);
  lua_pushinteger(L, (lua_Integer)st.st_size);
  lua_rawseti(L, -3, 4);
  lua_pushvalue(L, -2);
  lua_setfield(L, cache, file);
  lua_pushvalue(L, fn);
  return keep_top(L, base);
}
