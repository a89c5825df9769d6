// Unit tests of csrc/core/keyed_cache.h: made once per key, reused, bounded, thread-safe.
#include <cstdint>
#include <thread>
#include <utility>
#include <vector>

#include "check.h"
#include "keyed_cache.h"

using Key = std::pair<int64_t, std::vector<int32_t>>;

static void test_made_once_per_key() {
  slpfast::KeyedCache<Key, int> cache(8);
  int made = 0;
  auto make = [&](bool) { return ++made; };
  const Key a{0, {1, 2, 3}}, b{1, {1, 2, 3}}, c{0, {1, 2, 4}};
  CHECK(cache.get(a, make) == 1);
  CHECK(cache.get(a, make) == 1);  // reused
  CHECK(cache.get(b, make) == 2);  // another device
  CHECK(cache.get(c, make) == 3);  // another table
  CHECK(cache.get(b, make) == 2 && made == 3 && cache.size() == 3);
}

static void test_bounded() {
  slpfast::KeyedCache<Key, int> cache(2);
  int made = 0;
  auto make = [&](bool) { return ++made; };
  for (int32_t i = 0; i < 5; ++i) cache.get(Key{0, {i}}, make);
  CHECK(cache.size() == 2 && made == 5);
  CHECK(cache.get(Key{0, {0}}, make) == 1);  // the first keys stay cached
  CHECK(cache.get(Key{0, {4}}, make) == 6);  // past the capacity: made afresh each time
  bool kept = true;
  cache.get(Key{0, {9}}, [&](bool k) { kept = k; return 0; });
  CHECK(!kept);  // make() learns that its value will not be kept
}

static void test_threads_share_one_value() {
  slpfast::KeyedCache<Key, int> cache(8);
  int made = 0;  // guarded by the cache's lock: make() runs under it
  std::vector<int> got(8, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int r = 0; r < 1000; ++r) got[t] = cache.get(Key{0, {7}}, [&](bool) { return ++made; });
    });
  for (auto& th : threads) th.join();
  CHECK(made == 1);
  for (int v : got) CHECK(v == 1);
}

int main() {
  test_made_once_per_key();
  test_bounded();
  test_threads_share_one_value();
  TEST_MAIN_END();
}
