// StateCache unit tests: longest strict-prefix lookup, the minimum key length, LRU eviction,
// pins, same-key replacement and the slots handed back.
#include "engine/state_cache.h"

#include <algorithm>
#include <vector>

#include "gtest/gtest.h"

namespace bms {
namespace {

std::vector<int32_t> Seq(int n, int32_t first = 1) {
  std::vector<int32_t> v(n);
  for (int i = 0; i < n; ++i) v[i] = first + i;
  return v;
}

TEST(StateCache, LongestStrictPrefixWins) {
  StateCache c(/*capacity=*/8, /*min_tokens=*/3);
  EXPECT_TRUE(c.Insert(Seq(4), 10).empty());
  EXPECT_TRUE(c.Insert(Seq(7), 11).empty());
  EXPECT_TRUE(c.Insert(Seq(5, 100), 12).empty());  // another head: never a candidate below
  const StateCache::Entry* e = c.Lookup(Seq(9));
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->slot, 11);
  EXPECT_EQ(e->tokens, Seq(7));
  // A key equal to the prompt is no use (no token left to run): the shorter one is taken.
  e = c.Lookup(Seq(7));
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->slot, 10);
  // A prompt that diverges inside a key cannot use it.
  std::vector<int32_t> diverged = Seq(9);
  diverged[5] = 999;
  e = c.Lookup(diverged);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->slot, 10);
  diverged[2] = 999;
  EXPECT_EQ(c.Lookup(diverged), nullptr);
  EXPECT_EQ(c.Lookup(Seq(3)), nullptr);  // no longer than min_tokens: nothing to resume
}

TEST(StateCache, ShortKeysAndDisabledCacheHandTheSlotBack) {
  StateCache c(4, 5);
  EXPECT_EQ(c.Insert(Seq(4), 7), std::vector<int>{7});
  EXPECT_EQ(c.size(), 0);
  StateCache off(0, 1);
  EXPECT_FALSE(off.enabled());
  EXPECT_EQ(off.Insert(Seq(10), 3), std::vector<int>{3});
  EXPECT_EQ(off.Lookup(Seq(20)), nullptr);
}

TEST(StateCache, SameKeyReplacesAndFullCacheDropsLeastRecentlyUsed) {
  StateCache c(2, 2);
  EXPECT_TRUE(c.Insert(Seq(3), 1).empty());
  EXPECT_EQ(c.Insert(Seq(3), 2), std::vector<int>{1});  // the newer state replaces it
  EXPECT_EQ(c.size(), 1);
  EXPECT_TRUE(c.Insert(Seq(4, 50), 3).empty());
  c.NewStep();
  ASSERT_NE(c.Lookup(Seq(6)), nullptr);  // touches Seq(3): Seq(4, 50) is now the oldest
  EXPECT_EQ(c.Insert(Seq(5, 70), 4), std::vector<int>{3});
  EXPECT_TRUE(c.Contains(Seq(3)));
  EXPECT_TRUE(c.Contains(Seq(5, 70)));
  EXPECT_FALSE(c.Contains(Seq(4, 50)));
}

TEST(StateCache, EvictOneSkipsEntriesPinnedThisStep) {
  StateCache c(4, 2);
  c.Insert(Seq(3), 1);
  c.Insert(Seq(3, 40), 2);
  c.NewStep();
  ASSERT_NE(c.Lookup(Seq(5)), nullptr);  // pins slot 1 (now most recent, but pinned anyway)
  EXPECT_EQ(c.EvictOne(), 2);
  EXPECT_EQ(c.EvictOne(), -1);  // only the pinned entry is left
  c.NewStep();                  // the pin lapses
  EXPECT_EQ(c.EvictOne(), 1);
  EXPECT_EQ(c.size(), 0);
}

// Many conversations behind one long shared head (a system prompt): each prompt still finds its
// own conversation's entry, the longest one, whatever the other entries of the same length hold.
TEST(StateCache, ManyEntriesBehindASharedHead) {
  StateCache c(/*capacity=*/400, /*min_tokens=*/8);
  const std::vector<int32_t> head = Seq(64);
  auto conversation = [&](int id, int turns) {
    std::vector<int32_t> key = head;
    for (int t = 0; t < turns; ++t) key.insert(key.end(), {1000 + id, 2000 + t});
    return key;
  };
  int slot = 0;
  for (int id = 0; id < 100; ++id)
    for (int turns = 1; turns <= 3; ++turns)
      EXPECT_TRUE(c.Insert(conversation(id, turns), slot++).empty());
  EXPECT_TRUE(c.Insert(head, slot++).empty());
  for (int id : {0, 37, 99}) {
    std::vector<int32_t> prompt = conversation(id, 3);
    prompt.push_back(5);
    const StateCache::Entry* e = c.Lookup(prompt);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->tokens, conversation(id, 3));
    EXPECT_EQ(e->slot, id * 3 + 2);
  }
  // A new conversation only shares the head.
  std::vector<int32_t> fresh = conversation(500, 1);
  const StateCache::Entry* e = c.Lookup(fresh);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->tokens, head);
  // Diverging inside conversation 5's second turn: its first turn is the longest usable key.
  std::vector<int32_t> diverged = conversation(5, 2);
  diverged.back() = 7;
  diverged.push_back(8);
  e = c.Lookup(diverged);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->tokens, conversation(5, 1));
}

}  // namespace
}  // namespace bms
