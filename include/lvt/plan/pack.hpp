#pragma once
// Packing buffers with lifetimes into one arena (device) or one pool (pinned host), measured
// against the lower bound: the largest sum of bytes live at any one moment.
#include <algorithm>
#include <vector>

#include "lvt/plan/program.hpp"

namespace lvt::plan {

struct LivePeak {
  i64 bytes = 0;  // largest sum of live bytes
  int action = 0; // the first moment it is reached
};

// Largest sum of live bytes over step time, for the buffers in `mem`. No packing can be smaller.
// Lifetimes are action indices, so a difference array over time replaces sorting events.
constexpr LivePeak live_peak(const std::vector<Buffer>& bufs, Memory mem) {
  int horizon = 0;
  for (const Buffer& b : bufs) horizon = b.last + 1 > horizon ? b.last + 1 : horizon;
  std::vector<i64> delta(std::size_t(horizon) + 1, 0);
  for (const Buffer& b : bufs) {
    if (b.memory != mem || b.first < 0) continue;
    delta[std::size_t(b.first)] += b.bytes;
    delta[std::size_t(b.last) + 1] -= b.bytes;
  }
  i64 live = 0;
  LivePeak peak;
  for (int t = 0; t < horizon; ++t) {
    live += delta[std::size_t(t)];
    if (live > peak.bytes) {
      peak.bytes = live;
      peak.action = t;
    }
  }
  return peak;
}
constexpr i64 live_lower_bound(const std::vector<Buffer>& bufs, Memory mem) {
  return live_peak(bufs, mem).bytes;
}

constexpr bool lifetimes_overlap(const Buffer& a, const Buffer& b) {
  return a.first <= b.last && b.first <= a.last;
}
constexpr bool addresses_overlap(const Buffer& a, const Buffer& b) {
  return a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
}

// Packs the buffers in `mem` in step-time order: at each action, the buffers whose lifetime
// ended are freed, then those starting there are placed (longest-lived first, then largest) in
// the tightest free gap (best fit), or on top. Returns the arena size. O(n log n + n * gaps),
// cheap enough to run at compile time; tests/test_plan.cpp holds it to <= 1.02 x the bound.
constexpr i64 pack(std::vector<Buffer>& bufs, Memory mem) {
  struct Item {
    int first, last;
    i64 bytes;
    int id;
  };
  std::vector<Item> items;
  for (std::size_t i = 0; i < bufs.size(); ++i)
    if (bufs[i].memory == mem && bufs[i].first >= 0)
      items.push_back({bufs[i].first, bufs[i].last, bufs[i].bytes, int(i)});
  if (items.empty()) return 0;
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    if (a.first != b.first) return a.first < b.first;
    if (a.last != b.last) return a.last > b.last;
    if (a.bytes != b.bytes) return a.bytes > b.bytes;
    return a.id < b.id;
  });
  struct Live {
    i64 lo, hi;
    int last;
  };
  std::vector<Live> live;  // sorted by address
  i64 top = 0;
  for (const Item& it : items) {
    // Free what ended before this buffer starts.
    std::size_t w = 0;
    for (std::size_t r = 0; r < live.size(); ++r)
      if (live[r].last >= it.first) live[w++] = live[r];
    live.resize(w);
    // Tightest gap between live blocks that holds it; else on top of the highest.
    i64 best = -1, best_gap = -1, cursor = 0;
    std::size_t at = live.size();
    for (std::size_t k = 0; k < live.size(); ++k) {
      const i64 gap = live[k].lo - cursor;
      if (gap >= it.bytes && (best_gap < 0 || gap < best_gap)) {
        best = cursor;
        best_gap = gap;
        at = k;
      }
      cursor = live[k].hi;
    }
    if (best < 0) {
      best = cursor;
      at = live.size();
    }
    live.insert(live.begin() + std::ptrdiff_t(at), Live{best, best + it.bytes, it.last});
    bufs[std::size_t(it.id)].offset = best;
    if (best + it.bytes > top) top = best + it.bytes;
  }
  return top;
}

// Buffers that share addresses at different times: the later one's first action must wait for
// every use of the earlier one on other streams (same-stream order holds already). Only pairs
// that cross streams can add a wait, so the scan visits those.
constexpr void add_reuse_waits(ProgramBuilder& P) {
  const std::size_t n = P.buffers.size();
  std::vector<int> off_compute;  // buffers used on some stream other than compute
  for (std::size_t i = 0; i < n; ++i)
    for (int s = 1; s < stream_count; ++s)
      if (P.buffers[i].last_use[s] >= 0) {
        off_compute.push_back(int(i));
        break;
      }
  auto visit = [&](std::size_t j, std::size_t i) {
    const Buffer& later = P.buffers[j];
    const Buffer& earlier = P.buffers[i];
    if (i == j || earlier.memory != later.memory || earlier.last >= later.first) return;
    if (!addresses_overlap(earlier, later)) return;
    for (int s = 0; s < stream_count; ++s) P.wait(later.first, earlier.last_use[s]);
  };
  for (std::size_t j = 0; j < n; ++j) {
    const Buffer& later = P.buffers[j];
    if (later.first <= 0) continue;
    if (P.actions[std::size_t(later.first)].stream == Stream::compute) {
      for (int i : off_compute) visit(j, std::size_t(i));
    } else {
      for (std::size_t i = 0; i < n; ++i) visit(j, i);
    }
  }
}

// True when no two buffers of `mem` that are live at the same time share an address.
constexpr bool packing_is_valid(const std::vector<Buffer>& bufs, Memory mem) {
  for (std::size_t i = 0; i < bufs.size(); ++i)
    for (std::size_t j = i + 1; j < bufs.size(); ++j) {
      const Buffer &a = bufs[i], &b = bufs[j];
      if (a.memory != mem || b.memory != mem) continue;
      if (a.offset < 0 || b.offset < 0) return false;
      if (lifetimes_overlap(a, b) && addresses_overlap(a, b)) return false;
    }
  return true;
}

}  // namespace lvt::plan
