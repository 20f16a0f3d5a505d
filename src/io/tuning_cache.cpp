#include "slidesparse/io/tuning_cache.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "slidesparse/core/error.hpp"
#include "slidesparse/io/hf_checkpoint.hpp"

namespace slidesparse::io {
namespace fs = std::filesystem;
namespace {

constexpr char const* kFormat = "slidesparse-tuning-cache";
constexpr int kVersion = 1;

// Reads the entries of an existing cache file; an absent file is an empty cache.
std::map<std::string, nlohmann::json> load_entries(fs::path const& file) {
  std::map<std::string, nlohmann::json> entries;
  std::error_code ec;
  if (!fs::exists(file, ec)) return entries;
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(ErrorKind::kIo, "cannot read tuning cache {}: {}", file.string(), std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json doc = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || doc.value("format", "") != kFormat ||
      !doc.contains("version") || !doc["version"].is_number_integer() || !doc.contains("entries") ||
      !doc["entries"].is_object()) {
    fail(ErrorKind::kInvalidInput, "{} is not a SlideSparse tuning cache (expected a JSON object with "
         "format \"{}\", version and entries); delete it to start a new cache", file.string(), kFormat);
  }
  if (doc["version"].get<int>() != kVersion) {
    fail(ErrorKind::kInvalidInput, "tuning cache {} has version {}, this build reads version {}; delete "
         "it to start a new cache", file.string(), doc["version"].get<int>(), kVersion);
  }
  for (auto& [key, value] : doc["entries"].items()) entries.emplace(key, std::move(value));
  return entries;
}

// Exclusive advisory lock on "<file>.lock" for the duration of a save.
class FileLock {
 public:
  explicit FileLock(fs::path const& path) {
    fd_ = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(ErrorKind::kIo, "cannot open lock file {}: {}", path.string(), std::strerror(errno));
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) {
        int const err = errno;
        ::close(fd_);
        fail(ErrorKind::kIo, "cannot lock {}: {}", path.string(), std::strerror(err));
      }
    }
  }
  ~FileLock() { ::close(fd_); }  // closing releases the lock
  FileLock(FileLock const&) = delete;
  FileLock& operator=(FileLock const&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace

TuningCache::TuningCache(fs::path file) : file_(std::move(file)), entries_(load_entries(file_)) {}

TuningCache TuningCache::from_option(std::string const& option) {
  if (option == "none") return TuningCache();
  fs::path const path = option.empty() ? default_path() : fs::path(option);
  return path.empty() ? TuningCache() : TuningCache(path);
}

fs::path TuningCache::default_path() {
  if (char const* explicit_path = std::getenv("SLIDESPARSE_TUNING_CACHE"); explicit_path && *explicit_path) {
    return explicit_path;
  }
  if (char const* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return fs::path(xdg) / "slidesparse" / "tuning.json";
  if (char const* home = std::getenv("HOME"); home && *home) {
    return fs::path(home) / ".cache" / "slidesparse" / "tuning.json";
  }
  return {};
}

std::optional<nlohmann::json> TuningCache::find(std::string const& key) const {
  std::lock_guard lock(mutex_);
  auto const it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

void TuningCache::put(std::string const& key, nlohmann::json value) {
  std::lock_guard lock(mutex_);
  entries_[key] = value;
  unsaved_[key] = std::move(value);
}

std::size_t TuningCache::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

void TuningCache::save() {
  std::lock_guard lock(mutex_);
  if (file_.empty() || unsaved_.empty()) return;
  if (file_.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(file_.parent_path(), ec);
    if (ec) fail(ErrorKind::kIo, "cannot create folder {} for the tuning cache: {}", file_.parent_path().string(), ec.message());
  }
  FileLock const file_lock(file_.string() + ".lock");
  // Other processes may have saved since we loaded: merge, ours winning on equal keys.
  std::map<std::string, nlohmann::json> merged = load_entries(file_);
  for (auto const& [key, value] : unsaved_) merged[key] = value;
  nlohmann::json doc = {{"format", kFormat}, {"version", kVersion}, {"entries", nlohmann::json::object()}};
  for (auto const& [key, value] : merged) doc["entries"][key] = value;
  write_text_file_atomic(file_, doc.dump(1) + "\n");
  for (auto& [key, value] : merged) entries_.insert_or_assign(key, std::move(value));
  unsaved_.clear();
}

std::string tuning_key(std::initializer_list<std::pair<std::string_view, std::string>> fields) {
  std::string key;
  for (auto const& [name, value] : fields) {
    if (!key.empty()) key += ';';
    key += name;
    key += '=';
    for (char const c : value) key += (c == ';' || c == '=') ? '_' : c;
  }
  return key;
}

}  // namespace slidesparse::io
