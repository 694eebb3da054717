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
 * Compiled pages are cached by file name, with the file's modification time
 * and size: a changed file is compiled again on its next request, and keeps
 * its `page` table. The cache is a C hash table (in a registry userdata)
 * holding registry references, so that finding a page makes no Lua string
 * of its long file name on every request.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "lua/lhttp.h"

static const char CACHE_KEY = 'L';   /* registry key: its address */

enum { CACHE_SLOTS = 64 };

/* A compiled page. */
typedef struct lsp_entry {
  struct lsp_entry *next;
  int fn, page;                /* registry references */
  struct timespec mtime;       /* of the file compiled */
  off_t size;
  char file[];
} lsp_entry;

typedef struct lsp_cache { lsp_entry *slot[CACHE_SLOTS]; } lsp_cache;

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

static int cache_gc(lua_State *L) {
  lsp_cache *c = lua_touserdata(L, 1);
  for (int i = 0; i < CACHE_SLOTS; i++)
    for (lsp_entry *e = c->slot[i], *next; e; e = next) { next = e->next; free(e); }
  return 0;
}

static lsp_cache *cache_of(lua_State *L) {
  return rm_rt_record(L, &CACHE_KEY, sizeof(lsp_cache), cache_gc);
}

/* Hashes the length and the last 16 bytes only: the names of an app's
 * pages share their long start, and strcmp compares the whole name anyway. */
static lsp_entry **cache_slot(lsp_cache *c, const char *file) {
  size_t n = strlen(file), h = n;
  for (const char *p = file + (n > 16 ? n - 16 : 0); *p; p++) h = h * 33 + (unsigned char)*p;
  return &c->slot[h % CACHE_SLOTS];
}

static lsp_entry *cache_find(lsp_cache *c, const char *file) {
  for (lsp_entry *e = *cache_slot(c, file); e; e = e->next)
    if (strcmp(e->file, file) == 0) return e;
  return NULL;
}

/* A new entry for file, with its new page table; NULL when out of memory. */
static lsp_entry *cache_add(lua_State *L, lsp_cache *c, const char *file) {
  size_t n = strlen(file) + 1;
  lsp_entry *e = malloc(sizeof *e + n);
  if (!e) return NULL;
  memcpy(e->file, file, n);
  e->fn = LUA_NOREF;
  lua_newtable(L);
  e->page = luaL_ref(L, LUA_REGISTRYINDEX);
  lsp_entry **slot = cache_slot(c, file);
  e->next = *slot;
  *slot = e;
  return e;
}

static int fresh(const lsp_entry *e, const struct stat *st) {
  return e->fn != LUA_NOREF && e->size == st->st_size && e->mtime.tv_sec == st->st_mtim.tv_sec &&
         e->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

int rm_lsp_load(lua_State *L, const char *file) { return rm_lsp_load_stat(L, file, NULL); }

int rm_lsp_load_stat(lua_State *L, const char *file, const struct stat *known) {
  struct stat own;
  if (!known && stat(file, &own) != 0) { lua_pushfstring(L, "%s: not found", file); return -1; }
  const struct stat *st = known ? known : &own;
  lsp_cache *c = cache_of(L);
  lsp_entry *e = cache_find(c, file);
  if (e && fresh(e, st)) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->fn);
    return 0;
  }
  if (!e && !(e = cache_add(L, c, file))) { lua_pushliteral(L, "out of memory"); return -1; }
  if (read_file(L, file, (size_t)st->st_size) != 0) return -1;
  lua_pushfstring(L, "@%s", file);
  int rc = rm_lsp_compile(L, lua_tostring(L, -2), lua_rawlen(L, -2), lua_tostring(L, -1));
  lua_rotate(L, -3, 1);
  lua_pop(L, 2);   /* the function, or the error, stays */
  if (rc != 0) return -1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->page);   /* the same table across edits */
  lua_setupvalue(L, -2, 1);   /* the chunk's `page` */
  luaL_unref(L, LUA_REGISTRYINDEX, e->fn);
  lua_pushvalue(L, -1);
  e->fn = luaL_ref(L, LUA_REGISTRYINDEX);
  e->mtime = st->st_mtim;
  e->size = st->st_size;
  return 0;
}
