// bench-memory.cpp -- memory: bytes per queued item (200 k queued, the
// payload carried in pData: no client allocation) against the ceiling's
// deque, and what stays after a full drain and a GC. M rows.
#include <malloc.h>

#include <thread>

#include "runner.h"

namespace bench {

namespace {

double lua_heap(lua_State* L) {
  return lua_gc(L, LUA_GCCOUNT, 0) * 1024.0 + lua_gc(L, LUA_GCCOUNTB, 0);
}

struct MemStats {
  double rss_per_item, heap_per_item, rss_retained, heap_retained, lua_retained;
  double ceil_heap_per_item;
};

// The ceiling: the deque of the bare queue.
double ceil_heap_per_item(long items) {
  malloc_trim(0);
  long h0 = heap_bytes();
  auto* q = new CeilQ;
  for (long i = 0; i < items; ++i) q->push(i);
  double r = double(heap_bytes() - h0) / double(items);
  delete q;
  return r;
}

MemStats memory(long items) {
  MemStats m{};
  m.ceil_heap_per_item = ceil_heap_per_item(items);
  lua_State* L;
  void* utilid = ours_state(&L);
  lua_gc(L, LUA_GCCOLLECT, 0);
  malloc_trim(0);
  long r0 = rss_bytes(), h0 = heap_bytes();
  double k0 = lua_heap(L);
  std::thread prod([&] {
    for (long i = 0; i < items; ++i) deliver_ff(utilid, i);
  });
  prod.join();
  m.rss_per_item = double(rss_bytes() - r0) / double(items);
  m.heap_per_item = double(heap_bytes() - h0) / double(items);
  call(L, "drain", {double(items)});
  lua_gc(L, LUA_GCCOLLECT, 0);
  lua_gc(L, LUA_GCCOLLECT, 0);
  malloc_trim(0);
  m.rss_retained = double(rss_bytes() - r0);
  m.heap_retained = double(heap_bytes() - h0);
  m.lua_retained = lua_heap(L) - k0;
  lua_close(L);
  return m;
}

}  // namespace

void memory_rows() {
  header("### Memory (200 k queued, payload carried in pData: no client allocation)");
  MemStats m = memory(200000);
  row("M1", "bytes per queued item, RSS delta", fmt("%.1f B", m.rss_per_item),
      fmt_ratio(m.rss_per_item, m.ceil_heap_per_item), "", "");
  row("M2", "bytes per queued item, malloc'd (mallinfo2)", fmt("%.1f B", m.heap_per_item),
      fmt_ratio(m.heap_per_item, m.ceil_heap_per_item), "",
      "ceiling deque " + fmt("%.1f B", m.ceil_heap_per_item));
  row("M3", "retained after full drain + GC: malloc'd / Lua heap / RSS",
      fmt("%.0f B", m.heap_retained) + " / " + fmt("%.0f B", m.lua_retained) + " / " +
          fmt("%.0f B", m.rss_retained),
      "", "", "must be ~0");
}

}  // namespace bench
