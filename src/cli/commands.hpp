/// \file commands.hpp
/// \brief The subcommands of the slidesparse binary. Each register_* adds its CLI11 subcommand
/// and returns the function that runs it (exit code: 0 ok, 1 check failed, 2 bad input/usage).
#pragma once

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "slidesparse/core/dtype.hpp"

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

/// The projections' dtype of the model commands (run, eval ppl --device gpu, generate --device
/// gpu): fp8 (W8A8 E4M3), int8 (W8A8) or bf16; Error(kUsage) naming `who` otherwise.
DType model_compute_dtype(std::string const& name, char const* who);

}  // namespace slidesparse::cli
