// The slidesparse binary end to end: exit codes (0 ok, 1 check failed, 2 bad input/usage) and
// messages that name what was wrong.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/test_util.hpp"

namespace slidesparse {
namespace {

struct Result {
  int code = -1;
  std::string output;  // stdout and stderr
};

Result run(std::string const& args) {
  std::string const command = std::string(SLIDESPARSE_CLI) + " " + args + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  Result result;
  if (!pipe) return result;
  std::array<char, 4096> buffer{};
  while (std::fgets(buffer.data(), static_cast<int>(buffer.size()), pipe)) result.output += buffer.data();
  int const status = ::pclose(pipe);
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// A GPU command: where a GPU exists it succeeds and prints `says`; elsewhere it exits 2 saying
// there is no GPU (or no CUDA layer in this build).
void expect_ran_or_no_gpu(Result const& r, std::string const& says) {
  if (r.code == 0) {
    EXPECT_NE(r.output.find(says), std::string::npos) << r.output;
    return;
  }
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(r.output.find("no usable GPU") != std::string::npos ||
              r.output.find("built without the CUDA layer") != std::string::npos)
      << r.output;
}

TEST(Cli, EveryCommandHasHelp) {
  for (char const* command : {"convert", "slide", "verify", "inspect", "synth", "demo", "info", "bench", "eval ppl", "generate", "run", "calibrate"}) {
    Result const r = run(std::string(command) + " --help");
    EXPECT_EQ(r.code, 0) << command << ": " << r.output;
    EXPECT_NE(r.output.find("Usage"), std::string::npos) << command;
  }
  EXPECT_EQ(run("").code, 2);
  EXPECT_EQ(run("frobnicate").code, 2);
}

TEST(Cli, BenchRejectsBadArgumentsBeforeTouchingTheGpu) {
  struct Bad {
    char const* args;
    char const* says;
  };
  for (Bad const& b : {Bad{"--dtype fp7", "unknown dtype 'fp7'"}, Bad{"--model gpt-5", "unknown model 'gpt-5'"},
                       Bad{"--m 0", "M '0'"}, Bad{"--pattern 2:8", "6:8"}, Bad{"--mode fast", "unknown mode 'fast'"}}) {
    Result const r = run(std::string("bench --tuning-cache none ") + b.args);
    EXPECT_EQ(r.code, 2) << b.args << ": " << r.output;
    EXPECT_NE(r.output.find(b.says), std::string::npos) << b.args << ": " << r.output;
  }
}

TEST(Cli, RunChecksItsArgumentsAndRunsOrSaysThereIsNoGpu) {
  struct Bad {
    char const* args;
    char const* says;
  };
  for (Bad const& b : {Bad{"--dtype fp7", "unknown dtype 'fp7'"}, Bad{"--pattern 2:8", "6:8"},
                       Bad{"--compare 2:4", "--compare takes 'dense'"}, Bad{"--model preset:gpt-5", "gpt-5"},
                       Bad{"--model /nonexistent/dir", "/nonexistent/dir"}, Bad{"--backend fast", "unknown backend 'fast'"},
                       Bad{"--attention flash", "unknown attention 'flash'"},
                       Bad{"--release-unchosen", "give both"},
                       Bad{"--dense-fallback --release-tolerance 0.02", "give both"},
                       Bad{"--dense-fallback --release-unchosen --release-tolerance=-0.5", "fraction in [0, 1)"},
                       Bad{"--dense-fallback --release-unchosen --release-tolerance 2", "fraction in [0, 1)"}}) {
    Result const r = run(std::string("run --tuning-cache none ") + b.args);
    EXPECT_EQ(r.code, 2) << b.args << ": " << r.output;
    EXPECT_NE(r.output.find(b.says), std::string::npos) << b.args << ": " << r.output;
  }
  // A tiny preset end to end where a GPU exists; elsewhere a clear refusal.
  Result const r = run("run --model preset:tiny-llama --dtype int8 --compare dense --batch 2 --prompt-len 9 --gen-len 5 "
                       "--tuning-cache none");
  expect_ran_or_no_gpu(r, "speedup vs dense: 6:8 B=2 P=9: prefill");
}

// A Hugging Face tokenizer.json of the 256 byte tokens of GPT-2's byte map and no merges: every
// byte of a text is one token (id = the byte). Ids 256 .. vocab-1 are two-letter pieces ("Aa",
// "Ab", ...) that encoding never produces but decoding turns into text, so that everything a
// model of that vocabulary generates decodes.
void write_byte_tokenizer_json(std::string const& path, int vocab_size = 256) {
  nlohmann::json vocab = nlohmann::json::object();
  // Byte map as in tokenizer.hpp: printable bytes map to themselves, the other 68 to U+0100...
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    bool const printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    char32_t const cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(0x100 + next++);
    std::string text;
    if (cp < 0x80) {
      text += static_cast<char>(cp);
    } else {
      text += static_cast<char>(0xC0 | (cp >> 6));
      text += static_cast<char>(0x80 | (cp & 0x3F));
    }
    vocab[text] = b;
  }
  for (int id = 256; id < vocab_size; ++id) {
    vocab[std::string{static_cast<char>('A' + (id - 256) / 26), static_cast<char>('a' + (id - 256) % 26)}] = id;
  }
  nlohmann::json const tokenizer = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
                                    {"pre_tokenizer", {{"type", "ByteLevel"}, {"use_regex", true}}}};
  std::ofstream(path) << tokenizer.dump();
}

nlohmann::json read_json(std::string const& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

TEST(Cli, EvalOnTheGpuRunsOrSaysThereIsNoGpu) {
  // SmolLM2 (installed by setup): a few windows on the GPU decoder where one exists.
  // tests/cli/<this file> -> <source root>
  std::filesystem::path const root = std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
  std::string const model = (root / ".deps/models/SmolLM2-135M-Instruct.Q4_1.gguf").string();
  std::string const text = (root / "../shared/data/wikitext-2/test.txt").string();
  if (!std::filesystem::exists(model) || !std::filesystem::exists(text)) GTEST_SKIP() << "no " << model << " or " << text;
  Result const r = run("eval ppl --model " + model + " --text " + text + " --tokens 96 --ctx 48 --device gpu --pattern 6:8 --slide");
  expect_ran_or_no_gpu(r, "perplexity");
  Result const bad = run("eval ppl --model " + model + " --text " + text + " --device tpu");
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.output.find("--device must be cpu or gpu"), std::string::npos) << bad.output;
}

TEST(Cli, EvalNamesAMissingModelFile) {
  Result const r = run("eval ppl --model /nonexistent/model.gguf --text /nonexistent/text.txt");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/model.gguf"), std::string::npos) << r.output;
}

TEST(Cli, GenerateNamesAMissingModelAndRefusesCompareWithoutAPattern) {
  Result const missing = run("generate --model /nonexistent/model.gguf --prompt hi");
  EXPECT_EQ(missing.code, 2) << missing.output;
  EXPECT_NE(missing.output.find("/nonexistent/model.gguf"), std::string::npos) << missing.output;
  Result const compare = run("generate --model /nonexistent/model.gguf --prompt hi --compare");
  EXPECT_EQ(compare.code, 2) << compare.output;
  EXPECT_NE(compare.output.find("--pattern"), std::string::npos) << compare.output;
}

TEST(Cli, GenerateRunsAHuggingFaceDirectoryWithItsTokenizer) {
  test::TempDir dir;
  std::string const d = dir.path().string();
  ASSERT_EQ(run("synth " + d + "/m").code, 0);
  // No tokenizer.json: the error names the remedy.
  Result const none = run("generate --model " + d + "/m --prompt hello");
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.output.find("no tokenizer.json: give --tokenizer"), std::string::npos) << none.output;
  write_byte_tokenizer_json(d + "/m/tokenizer.json", 512);  // the synthetic model's vocabulary
  Result const both = run("generate --model " + d + "/m --prompt 'Sparse weights' --tokens 6 --pattern 6:8 --compare --json " + d +
                          "/both.json");
  ASSERT_EQ(both.code, 0) << both.output;
  EXPECT_NE(both.output.find("[dense] Sparse weights"), std::string::npos) << both.output;
  EXPECT_NE(both.output.find("[6:8 (magnitude)] Sparse weights"), std::string::npos) << both.output;
  nlohmann::json const j = read_json(d + "/both.json");
  ASSERT_EQ(j["generations"].size(), 2u);
  for (auto const& g : j["generations"]) {
    // No end-of-text token in this vocabulary: exactly --tokens new tokens.
    ASSERT_EQ(g["tokens"].size(), 6u) << g.dump();
    for (int id : g["tokens"]) EXPECT_TRUE(id >= 0 && id < 512) << id;
  }
  // The SlideSparse path generates the very tokens of the dense path on the pruned weights.
  Result const slid = run("generate --model " + d + "/m --prompt 'Sparse weights' --tokens 6 --pattern 6:8 --slide --json " + d +
                          "/slid.json");
  ASSERT_EQ(slid.code, 0) << slid.output;
  EXPECT_EQ(read_json(d + "/slid.json")["generations"][0]["tokens"], j["generations"][1]["tokens"]);
  // On the GPU where there is one (the same weights through the GPU decoder), else a clear refusal.
  expect_ran_or_no_gpu(run("generate --model " + d + "/m --prompt 'Sparse weights' --tokens 6 --pattern 6:8 --slide "
                           "--device gpu --dtype int8"),
                       "[6:8 (magnitude, SlideSparse path)] Sparse weights");
  Result const bad = run("generate --model " + d + "/m --prompt hi --dtype fp8");
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.output.find("--dtype applies to --device gpu"), std::string::npos) << bad.output;
}

TEST(Cli, DemoPasses) {
  // The synthetic part only: the real-model part's pieces (perplexity, generation, SlideSparse
  // path == dense path) have their own tests, and it takes minutes (more under ASan).
  Result const r = run("demo --no-real-model");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("exact: yes"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("PASS"), std::string::npos) << r.output;
  // The GPU part runs where a GPU is present (2:4 and 6:8 against dense), and says why not
  // elsewhere.
  EXPECT_TRUE(r.output.find("GPU part skipped") != std::string::npos ||
              (r.output.find("speedup vs dense: 2:4") != std::string::npos &&
               r.output.find("speedup vs dense: 6:8") != std::string::npos))
      << r.output;
}

TEST(Cli, CalibrateFeedsConvertPruneImportance) {
  test::TempDir dir;
  std::string const d = dir.path().string();
  ASSERT_EQ(run("synth " + d + "/dense").code, 0);
  {
    std::ofstream ids(d + "/ids.txt");
    for (int i = 0; i < 300; ++i) ids << (i * 37 + 5) % 512 << (i % 20 == 19 ? "\n" : " ");
  }
  Result const calibrated = run("calibrate --model " + d + "/dense --token-ids " + d + "/ids.txt --tokens 200 --ctx 64 --out " +
                                d + "/importance.safetensors");
  ASSERT_EQ(calibrated.code, 0) << calibrated.output;
  EXPECT_NE(calibrated.output.find("200 tokens"), std::string::npos) << calibrated.output;
  Result const converted = run("convert " + d + "/dense " + d + "/out --pattern 6:8 --prune importance --importance " + d +
                               "/importance.safetensors --no-progress");
  ASSERT_EQ(converted.code, 0) << converted.output;
  EXPECT_EQ(run("verify " + d + "/out --pattern 6:8").code, 0);
  // Errors: text without a tokenizer for a Hugging Face directory; a bad token id, located.
  Result const no_tokenizer = run("calibrate --model " + d + "/dense --text " + d + "/ids.txt --out " + d + "/x.safetensors");
  EXPECT_EQ(no_tokenizer.code, 2);
  EXPECT_NE(no_tokenizer.output.find("no tokenizer.json"), std::string::npos) << no_tokenizer.output;
  {
    // With a tokenizer.json (the 256 byte tokens of GPT-2's byte map, no merges) text works.
    write_byte_tokenizer_json(d + "/dense/tokenizer.json");
    std::ofstream(d + "/text.txt") << "Calibration text, tokenized byte by byte.";
    Result const with_text = run("calibrate --model " + d + "/dense --text " + d + "/text.txt --out " + d + "/t.safetensors");
    EXPECT_EQ(with_text.code, 0) << with_text.output;
    EXPECT_NE(with_text.output.find("41 tokens"), std::string::npos) << with_text.output;
  }
  {
    std::ofstream bad(d + "/bad.txt");
    bad << "1 2 512 3";
  }
  Result const bad = run("calibrate --model " + d + "/dense --token-ids " + d + "/bad.txt --out " + d + "/x.safetensors");
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.output.find("entry 2 ('512')"), std::string::npos) << bad.output;
  EXPECT_FALSE(std::filesystem::exists(d + "/x.safetensors"));
}

TEST(Cli, ConvertVerifyInspectSlideRoundTrip) {
  test::TempDir dir;
  std::string const d = dir.path().string();
  ASSERT_EQ(run("synth " + d + "/dense").code, 0);
  // Unpruned weights break the pattern: exit 1, with the first violation located.
  Result const unpruned = run("verify " + d + "/dense --pattern 6:8");
  EXPECT_EQ(unpruned.code, 1) << unpruned.output;
  EXPECT_NE(unpruned.output.find("row 0, block 0 (columns 0..7): 8 nonzeros"), std::string::npos) << unpruned.output;
  Result const converted = run("convert " + d + "/dense " + d + "/out --pattern 6:8 --quant fp8 --no-progress");
  ASSERT_EQ(converted.code, 0) << converted.output;
  EXPECT_NE(converted.output.find("converted 14 weights"), std::string::npos) << converted.output;
  Result const verified = run("verify " + d + "/out");
  EXPECT_EQ(verified.code, 0) << verified.output;
  Result const inspected = run("inspect " + d + "/out --json");
  EXPECT_EQ(inspected.code, 0);
  auto const json = nlohmann::json::parse(inspected.output);
  bool found = false;
  for (auto const& t : json["tensors"]) {
    if (t["name"] == "model.layers.1.mlp.up_proj.weight") {
      EXPECT_EQ(t["dtype"], "F8_E4M3");
      EXPECT_EQ(t["best_pattern"], "6:8");
      EXPECT_EQ(t["satisfies"]["14:16"], true);
      EXPECT_EQ(t["satisfies"]["4:6"], false);
      found = true;
    }
  }
  EXPECT_TRUE(found);
  Result const slid = run("slide " + d + "/out/model-00001-of-00002.safetensors " + d + "/slid.safetensors --pattern 6:8 --include '_proj\\.weight$' --no-progress");
  EXPECT_EQ(slid.code, 0) << slid.output;
  EXPECT_EQ(run("verify " + d + "/slid.safetensors").code, 0);
  // Converting again into the same place is refused (exit 2) unless --overwrite.
  EXPECT_EQ(run("convert " + d + "/dense " + d + "/out --no-progress").code, 2);
  EXPECT_EQ(run("convert " + d + "/dense " + d + "/out --no-progress --overwrite").code, 0);
}

TEST(Cli, BadInputGetsExitCode2AndAClearMessage) {
  test::TempDir dir;
  std::string const d = dir.path().string();
  Result const wrong_notation = run("convert a b --pattern 2:8");
  EXPECT_EQ(wrong_notation.code, 2);
  EXPECT_NE(wrong_notation.output.find("6:8"), std::string::npos) << wrong_notation.output;
  Result const missing = run("verify " + d + "/nothing --pattern 6:8");
  EXPECT_EQ(missing.code, 2);
  EXPECT_NE(missing.output.find("nothing"), std::string::npos) << missing.output;
  std::ofstream(dir / "garbage.safetensors") << "this is not a safetensors file at all";
  Result const garbage = run("inspect " + d + "/garbage.safetensors");
  EXPECT_EQ(garbage.code, 2);
  EXPECT_NE(garbage.output.find("garbage.safetensors"), std::string::npos) << garbage.output;
  EXPECT_EQ(run("convert a b --quant int4").code, 2);
}

}  // namespace
}  // namespace slidesparse
