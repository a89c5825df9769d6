// A small thread-safe cache of values made once per key and then reused for the life of the
// process: no eviction, so a value handed out stays valid (the pose ops keep their device copy
// of a layout table here; kernels queued on any stream may still read it). At most `capacity`
// keys are kept; past that, values are made afresh on every call instead of cached, so
// memory stays bounded whatever the callers do. Torch-free (unit-tested by ctest).
#pragma once

#include <cstddef>
#include <map>
#include <mutex>
#include <utility>

namespace slpfast {

template <typename Key, typename Value>
class KeyedCache {
 public:
  explicit KeyedCache(std::size_t capacity) : capacity_(capacity) {}

  // The cached value of `key`, made by `make(kept)` the first time (under the lock: two threads
  // asking for a new key at once make it once). `kept` tells `make` whether the value will be
  // cached (false past the capacity), e.g. to skip work that only a reused value needs.
  template <typename Make>
  Value get(const Key& key, Make make) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = values_.find(key);
    if (it != values_.end()) return it->second;
    const bool kept = values_.size() < capacity_;
    Value value = make(kept);
    if (kept) values_.emplace(key, value);
    return value;
  }

  std::size_t size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return values_.size();
  }

 private:
  std::size_t capacity_;
  mutable std::mutex mutex_;
  std::map<Key, Value> values_;
};

}  // namespace slpfast
