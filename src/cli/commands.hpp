/// \file commands.hpp
/// \brief The subcommands of the slidesparse binary. Each register_* adds its CLI11 subcommand
/// and returns the function that runs it (exit code: 0 ok, 1 check failed, 2 bad input/usage).
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

namespace slidesparse::cli {

using Command = std::function<int()>;

Command register_convert(CLI::App& app);
Command register_slide(CLI::App& app);
Command register_verify(CLI::App& app);
Command register_inspect(CLI::App& app);
Command register_synth(CLI::App& app);
Command register_demo(CLI::App& app);
Command register_info(CLI::App& app);
Command register_bench(CLI::App& app);
Command register_eval(CLI::App& app);
Command register_generate(CLI::App& app);
Command register_run(CLI::App& app);
Command register_calibrate(CLI::App& app);

}  // namespace slidesparse::cli
