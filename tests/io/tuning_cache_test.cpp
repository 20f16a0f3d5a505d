#include "slidesparse/io/tuning_cache.hpp"

#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/test_util.hpp"
#include "slidesparse/core/error.hpp"

namespace slidesparse::io {
namespace {

using test::TempDir;

TEST(TuningCache, RoundTripAcrossInstances) {
  TempDir dir;
  auto const file = dir.path() / "sub" / "tuning.json";  // the folder is created on save
  std::string const key = tuning_key({{"gpu", "H100"}, {"n", "4608"}, {"m", "4096"}});
  {
    TuningCache cache(file);
    EXPECT_EQ(cache.size(), 0u);
    EXPECT_FALSE(cache.find(key));
    cache.put(key, {{"alg", 3}, {"split_k", 2}});
    EXPECT_EQ(cache.find(key)->at("alg"), 3);
    cache.save();
  }
  TuningCache reloaded(file);
  ASSERT_TRUE(reloaded.find(key));
  EXPECT_EQ(reloaded.find(key)->at("split_k"), 2);
  EXPECT_FALSE(reloaded.find(tuning_key({{"gpu", "H100"}, {"n", "4608"}, {"m", "8192"}})));
}

TEST(TuningCache, ConcurrentWritersKeepEachOthersEntries) {
  // Two processes that loaded the same (empty) file each add entries; the second save must
  // not drop the first one's.
  TempDir dir;
  auto const file = dir.path() / "tuning.json";
  TuningCache a(file), b(file);
  a.put("k=a", 1);
  b.put("k=b", 2);
  a.save();
  b.save();
  TuningCache merged(file);
  EXPECT_EQ(merged.size(), 2u);
  EXPECT_EQ(*merged.find("k=a"), 1);
  EXPECT_EQ(*merged.find("k=b"), 2);
  // b now also sees a's entry in memory.
  EXPECT_EQ(*b.find("k=a"), 1);
}

TEST(TuningCache, ThreadsPutAndSaveSafely) {
  TempDir dir;
  TuningCache cache(dir.path() / "tuning.json");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&cache, t] {
      for (int i = 0; i < 50; ++i) {
        cache.put(tuning_key({{"t", std::to_string(t)}, {"i", std::to_string(i)}}), i);
        if (i % 10 == 0) cache.save();
      }
    });
  }
  for (auto& th : threads) th.join();
  cache.save();
  EXPECT_EQ(TuningCache(dir.path() / "tuning.json").size(), 200u);
}

TEST(TuningCache, InMemoryCacheNeverWrites) {
  TuningCache cache;
  cache.put("x=1", 1);
  cache.save();
  EXPECT_TRUE(cache.file().empty());
  EXPECT_EQ(*cache.find("x=1"), 1);
}

TEST(TuningCache, RejectsForeignFilesNamingThem) {
  TempDir dir;
  auto const file = dir.path() / "tuning.json";
  for (std::string const text : {"not json", "[]", R"({"format": "other", "version": 1, "entries": {}})",
                                 R"({"format": "slidesparse-tuning-cache", "version": 99, "entries": {}})",
                                 R"({"format": "slidesparse-tuning-cache", "version": 1, "entries": []})"}) {
    std::ofstream(file) << text;
    try {
      TuningCache cache(file);
      FAIL() << "accepted: " << text;
    } catch (Error const& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
      EXPECT_NE(std::string(e.what()).find(file.string()), std::string::npos) << e.what();
    }
  }
}

TEST(TuningCache, KeysStayUnambiguous) {
  EXPECT_EQ(tuning_key({{"a", "x;y=z"}, {"b", "1"}}), "a=x_y_z;b=1");
  EXPECT_NE(tuning_key({{"a", "1"}, {"b", "2"}}), tuning_key({{"a", "1;b=2"}}));
}

TEST(TuningCache, DefaultPathFollowsEnvironment) {
  // Restores the caller's environment afterwards.
  auto const saved = [](char const* name) -> std::optional<std::string> {
    char const* v = std::getenv(name);
    return v ? std::optional<std::string>(v) : std::nullopt;
  };
  auto const old_explicit = saved("SLIDESPARSE_TUNING_CACHE");
  auto const old_xdg = saved("XDG_CACHE_HOME");
  ::setenv("SLIDESPARSE_TUNING_CACHE", "/tmp/explicit.json", 1);
  EXPECT_EQ(TuningCache::default_path(), "/tmp/explicit.json");
  ::unsetenv("SLIDESPARSE_TUNING_CACHE");
  ::setenv("XDG_CACHE_HOME", "/tmp/xdg", 1);
  EXPECT_EQ(TuningCache::default_path(), "/tmp/xdg/slidesparse/tuning.json");
  ::unsetenv("XDG_CACHE_HOME");
  if (old_explicit) ::setenv("SLIDESPARSE_TUNING_CACHE", old_explicit->c_str(), 1);
  if (old_xdg) ::setenv("XDG_CACHE_HOME", old_xdg->c_str(), 1);
}

}  // namespace
}  // namespace slidesparse::io
