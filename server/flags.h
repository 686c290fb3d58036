// FlagSet: the command-line flags of one bmserve subcommand. Each flag may also be set by the
// environment variable BMSERVE_<NAME> (upper case, '-' -> '_'); the command line wins. Unknown
// flags, missing values and unparsable numbers are InvalidArgument naming the flag.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/commands.h"

namespace bms {

class FlagSet {
 public:
  explicit FlagSet(std::string command) : command_(std::move(command)) {}

  void String(const std::string& name, std::string* value, const std::string& help);
  void Int(const std::string& name, int* value, const std::string& help);
  void Int64(const std::string& name, int64_t* value, const std::string& help);
  void Double(const std::string& name, double* value, const std::string& help);
  // `--name` alone sets true; `--name=false` / `--name false` also accepted.
  void Bool(const std::string& name, bool* value, const std::string& help);
  // A flag that may repeat; each occurrence appends (e.g. --api-key A --api-key B).
  void StringList(const std::string& name, std::vector<std::string>* values,
                  const std::string& help);

  // Parses args (after the command name). --help sets help_requested() and returns OK.
  absl::Status Parse(const Args& args);
  bool help_requested() const { return help_requested_; }
  std::string Usage() const;
  // "name=value" for every flag, for the start-up log.
  std::vector<std::string> EffectiveValues() const;
  // Whether the flag was given on the command line or in the environment.
  bool WasSet(const std::string& name) const;

 private:
  struct Flag {
    std::string name;
    std::string help;
    bool is_bool = false;
    bool is_list = false;
    std::function<absl::Status(const std::string&)> set;
    std::function<std::string()> get;
    bool was_set = false;
  };
  Flag* Find(const std::string& name);
  std::string command_;
  std::vector<Flag> flags_;
  bool help_requested_ = false;
};

}  // namespace bms
