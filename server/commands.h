// The `bmserve` subcommands. Each takes the arguments after its name and returns the process
// exit code; each lives in its own cmd_*.cc file. main.cc only dispatches.
#pragma once

#include <string>
#include <vector>

namespace bms {

using Args = std::vector<std::string>;

int GenerateCommand(const Args& args);     // cmd_generate.cc
int MakeModelCommand(const Args& args);    // cmd_make_model.cc
int TokenizeCommand(const Args& args);     // cmd_tokenize.cc
int DetokenizeCommand(const Args& args);   // cmd_tokenize.cc
int ServeCommand(const Args& args);        // cmd_serve.cc
int BenchEngineCommand(const Args& args);  // cmd_bench_engine.cc
int BenchCommand(const Args& args);        // cmd_bench.cc
int InspectCommand(const Args& args);      // cmd_inspect.cc

}  // namespace bms
