#include <cstring>

#include "slidesparse/convert/convert.hpp"
#include "slidesparse/core/slide.hpp"
#include "slidesparse/io/hf_checkpoint.hpp"

namespace slidesparse::convert {
namespace fs = std::filesystem;

bool VerifyReport::ok() const {
  return !tensors.empty() &&
         std::all_of(tensors.begin(), tensors.end(), [](auto const& t) { return t.ok; });
}

namespace {

// The `slidesparse` section: config.json of a directory, else the file's __metadata__.
nlohmann::json find_section(io::HfCheckpoint const& ckpt) {
  if (ckpt.config().contains("slidesparse")) return ckpt.config()["slidesparse"];
  auto const& metadata = ckpt.shard(0).metadata();
  auto const it = metadata.find("slidesparse");
  if (it == metadata.end()) return nullptr;
  try {
    return nlohmann::json::parse(it->second);
  } catch (nlohmann::json::parse_error const& e) {
    fail(ErrorKind::kInvalidInput, "{}: __metadata__ 'slidesparse' is not valid JSON: {}",
         ckpt.shard(0).path().string(), e.what());
  }
}

// Zero elements may be stored as -0.0; slide writes +0.0. Compare modulo that.
bool same_modulo_negative_zero(DType dtype, std::span<std::byte const> a, std::span<std::byte const> b) {
  if (a.size() != b.size()) return false;
  return dispatch_weight_dtype(dtype, "verify", [&](auto elem) {
    using Elem = decltype(elem);
    using Bits = typename Elem::Bits;
    for (std::size_t i = 0; i < a.size(); i += sizeof(Bits)) {
      Bits const x = load<Bits>(a.data() + i), y = load<Bits>(b.data() + i);
      if (x != y && !(Elem::is_zero(x) && Elem::is_zero(y))) return false;
    }
    return true;
  });
}

}  // namespace

VerifyReport verify_checkpoint(fs::path const& path, std::optional<SparsityPattern> pattern,
                               std::string const& include, std::string const& exclude) {
  io::HfCheckpoint const ckpt = io::HfCheckpoint::open(path);
  nlohmann::json const section = find_section(ckpt);
  VerifyReport report;
  std::int64_t alignment = kDefaultKAlignment;
  std::optional<SparsityPattern> recorded;
  if (section.is_object() && section.contains("pattern")) {
    recorded = SparsityPattern::parse(section["pattern"].get<std::string>());
    alignment = section.value("k_alignment", kDefaultKAlignment);
    report.slid_layout = section.value("format", "") == "slid";
  }
  if (!pattern && !recorded) {
    fail(ErrorKind::kUsage, "{} records no pattern; pass --pattern", path.string());
  }
  if (pattern && recorded && report.slid_layout && *pattern != *recorded) {
    fail(ErrorKind::kUsage, "{} holds tensors slid for {}; they cannot be checked against {}",
         path.string(), recorded->to_string(), pattern->to_string());
  }
  report.pattern = pattern ? *pattern : *recorded;
  SparsityPattern const p = report.pattern;

  // Default selection: the tensors the artifact says it processed, else the linear weights.
  bool const use_recorded = include.empty() && section.is_object() && section.contains("tensors");
  TensorSelection const selection(include, exclude);
  std::vector<std::byte> data, round_trip;
  for (auto const& t : ckpt.tensors()) {
    bool const selected = use_recorded ? section["tensors"].contains(t.name) && t.is_matrix()
                                       : selection.selects(t, ckpt.is_directory());
    if (!selected) continue;
    TensorVerdict verdict;
    verdict.name = t.name;
    data.resize(t.nbytes());
    ckpt.read(t, data);
    std::int64_t const rows = t.shape[0];
    if (report.slid_layout) {
      std::int64_t const k = section["tensors"][t.name].value("k", std::int64_t{0});
      LiftedShape const shape = lifted_shape(p, std::max<std::int64_t>(k, 1), alignment);
      if (k < 1 || shape.k_lifted != t.shape[1]) {
        verdict.problem = fmt::format("has {} columns but K = {} gives K' = {}", t.shape[1], k,
                                      shape.k_lifted);
      } else {
        std::vector<std::byte> dense(static_cast<std::size_t>(rows * k) * dtype_size(t.dtype));
        try {
          unslide({t.dtype, rows, t.shape[1], data.data(), t.name}, p, shape,
                  {t.dtype, rows, k, dense.data(), t.name});
          round_trip.resize(data.size());
          slide({t.dtype, rows, k, dense.data(), t.name}, p, shape,
                {t.dtype, rows, t.shape[1], round_trip.data(), t.name});
          if (!same_modulo_negative_zero(t.dtype, data, round_trip)) {
            // Valid but not the greedy layout: lossless still (unslide is exact), say so.
            verdict.problem = "valid 2:4 windows, but not in the canonical greedy layout";
          }
        } catch (Error const& e) {
          verdict.problem = e.what();
        }
      }
    } else {
      verdict.check = check_pattern({t.dtype, rows, t.shape[1], data.data(), t.name}, p);
      if (!verdict.check.ok()) {
        verdict.problem = fmt::format("{} blocks break {}", verdict.check.violating_blocks, p.to_string());
      } else {
        LiftedShape const shape = lifted_shape(p, t.shape[1], alignment);
        std::vector<std::byte> slid(static_cast<std::size_t>(rows * shape.k_lifted) * dtype_size(t.dtype));
        round_trip.resize(data.size());
        slide({t.dtype, rows, t.shape[1], data.data(), t.name}, p, shape,
              {t.dtype, rows, shape.k_lifted, slid.data(), t.name});
        unslide({t.dtype, rows, shape.k_lifted, slid.data(), t.name}, p, shape,
                {t.dtype, rows, t.shape[1], round_trip.data(), t.name});
        if (!same_modulo_negative_zero(t.dtype, data, round_trip)) {
          verdict.problem = "slide -> unslide does not reproduce the weight (a bug: please report)";
        }
      }
    }
    verdict.ok = verdict.problem.empty();
    report.tensors.push_back(std::move(verdict));
  }
  return report;
}

}  // namespace slidesparse::convert
