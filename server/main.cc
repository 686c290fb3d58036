// bmserve: entry point. Dispatches to one subcommand (server/commands.h); no logic of its own.
#include <cstdio>
#include <cstring>
#include <string>

#include "server/commands.h"

namespace {

struct Command {
  const char* name;
  int (*run)(const bms::Args&);
  const char* help;
};

const Command kCommands[] = {
    {"serve", bms::ServeCommand, "run the HTTP/gRPC server (--model DIR, or --demo)"},
    {"generate", bms::GenerateCommand, "generate tokens offline through the engine"},
    {"make-model", bms::MakeModelCommand, "write a random-weight model in the published layout"},
    {"inspect", bms::InspectCommand, "list a checkpoint's tensors and validate it"},
    {"tokenize", bms::TokenizeCommand, "print the token ids of a text"},
    {"detokenize", bms::DetokenizeCommand, "print the text of token ids"},
    {"bench", bms::BenchCommand,
     "GPU benchmark suite vs physical floors (CUDA backend, preset random weights)"},
    {"bench-engine", bms::BenchEngineCommand,
     "closed-loop request benchmark through the engine loop (any backend, --model/--demo)"},
};

void PrintUsage(FILE* out) {
  std::fprintf(out,
               "usage: bmserve <command> [options]\n\n"
               "BlackMamba inference server.\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-14s %s\n", c.name, c.help);
  std::fprintf(out, "\nRun 'bmserve <command> --help' for a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    PrintUsage(stdout);
    return 0;
  }
  std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    PrintUsage(stdout);
    return 0;
  }
  for (const Command& c : kCommands) {
    if (name == c.name) return c.run(bms::Args(argv + 2, argv + argc));
  }
  std::fprintf(stderr, "bmserve: unknown command '%s'\n\n", name.c_str());
  PrintUsage(stderr);
  return 2;
}
