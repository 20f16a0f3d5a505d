/// \file tuning_cache.hpp
/// \brief A persisted store of GEMM tuning results (algorithm choices), shared across processes.
///
/// Autotuning a GEMM (cuSPARSELt's MatmulSearch, timing cuBLASLt heuristics) costs tens to
/// hundreds of milliseconds per (shape, M bucket); a model has dozens of such problems. The
/// results are stored here under keys that name everything the choice depends on (GPU, driver,
/// CUDA and library versions, dtypes, N, K', M bucket — the backends build the key), so a key
/// from another machine or library version simply never matches.
///
/// File: JSON {"format": "slidesparse-tuning-cache", "version": 1, "entries": {key: value}}.
/// save() takes an exclusive lock on "<file>.lock", re-reads the file, adds this process's new
/// entries and replaces the file atomically, so concurrent processes do not lose each other's
/// results. Thread-safe.
#pragma once

#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace slidesparse::io {

class TuningCache {
 public:
  /// An in-memory cache that is never written (tests, --no-tuning-cache).
  TuningCache() = default;
  /// Loads `file` if it exists. A file that is not a tuning cache of this version is an Error
  /// (kInvalidInput) naming the file; delete it to start over.
  explicit TuningCache(std::filesystem::path file);

  /// $SLIDESPARSE_TUNING_CACHE if set, else $XDG_CACHE_HOME/slidesparse/tuning.json, else
  /// $HOME/.cache/slidesparse/tuning.json; empty when none of these is set.
  static std::filesystem::path default_path();
  /// The cache a --tuning-cache option names: "" the default_path() file, "none" in memory only,
  /// anything else that file.
  static TuningCache from_option(std::string const& option);

  std::optional<nlohmann::json> find(std::string const& key) const;
  /// Records a result (replacing an older one under the same key); persisted by save().
  void put(std::string const& key, nlohmann::json value);
  /// Writes new entries to the file (no-op for an in-memory cache or when nothing changed).
  void save();

  std::filesystem::path const& file() const noexcept { return file_; }
  std::size_t size() const;

 private:
  std::filesystem::path file_;
  mutable std::mutex mutex_;
  std::map<std::string, nlohmann::json> entries_;
  std::map<std::string, nlohmann::json> unsaved_;
};

/// Builds a cache key from ordered (name, value) fields: "name=value;name=value;...".
/// Values must not contain ';' or '=' (replaced by '_' so that keys stay unambiguous).
std::string tuning_key(std::initializer_list<std::pair<std::string_view, std::string>> fields);

}  // namespace slidesparse::io
