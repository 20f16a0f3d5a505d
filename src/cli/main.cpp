// slidesparse: the command-line tool. Exit codes: 0 success, 1 a check failed, 2 bad input or
// usage (the message names the file, tensor and offset where it can).
#include <cstdio>
#include <map>

#include <fmt/format.h>

#include "commands.hpp"
#include "slidesparse/core/error.hpp"

int main(int argc, char** argv) {
  using namespace slidesparse;
  CLI::App app{"SlideSparse: run (2N-2):2N sparse LLM weights on 2:4 sparse tensor cores, losslessly"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "slidesparse 0.1.0");
  std::map<CLI::App*, cli::Command> commands;
  auto add = [&](cli::Command (*registrar)(CLI::App&)) {
    std::size_t const before = app.get_subcommands({}).size();
    cli::Command run = registrar(app);
    commands[app.get_subcommands({})[before]] = std::move(run);
  };
  add(cli::register_convert);
  add(cli::register_slide);
  add(cli::register_verify);
  add(cli::register_inspect);
  add(cli::register_synth);
  add(cli::register_demo);
  add(cli::register_info);
  add(cli::register_bench);
  add(cli::register_eval);
  add(cli::register_generate);
  add(cli::register_run);
  add(cli::register_calibrate);
  try {
    app.parse(argc, argv);
  } catch (CLI::ParseError const& e) {
    int const code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  try {
    for (auto& [sub, run] : commands) {
      if (sub->parsed()) return run();
    }
  } catch (Error const& e) {
    fmt::print(stderr, "slidesparse: error: {}\n", e.what());
    return e.kind() == ErrorKind::kCheckFailed ? 1 : 2;
  } catch (std::exception const& e) {
    fmt::print(stderr, "slidesparse: error: {}\n", e.what());
    return 2;
  }
  return 2;
}
