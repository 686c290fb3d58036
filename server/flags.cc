#include "server/flags.h"

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace bms {
namespace {

absl::Status Bad(const std::string& name, const std::string& value, const char* what) {
  return absl::InvalidArgumentError(
      absl::StrCat("flag --", name, ": expected ", what, ", got '", value, "'"));
}

}  // namespace

void FlagSet::String(const std::string& name, std::string* value, const std::string& help) {
  flags_.push_back({name, help, false, false,
                    [value](const std::string& v) {
                      *value = v;
                      return absl::OkStatus();
                    },
                    [value] { return *value; }});
}

void FlagSet::Int(const std::string& name, int* value, const std::string& help) {
  flags_.push_back({name, help, false, false,
                    [name, value](const std::string& v) {
                      if (!absl::SimpleAtoi(v, value)) return Bad(name, v, "an integer");
                      return absl::OkStatus();
                    },
                    [value] { return std::to_string(*value); }});
}

void FlagSet::Int64(const std::string& name, int64_t* value, const std::string& help) {
  flags_.push_back({name, help, false, false,
                    [name, value](const std::string& v) {
                      if (!absl::SimpleAtoi(v, value)) return Bad(name, v, "an integer");
                      return absl::OkStatus();
                    },
                    [value] { return std::to_string(*value); }});
}

void FlagSet::Double(const std::string& name, double* value, const std::string& help) {
  flags_.push_back({name, help, false, false,
                    [name, value](const std::string& v) {
                      if (!absl::SimpleAtod(v, value)) return Bad(name, v, "a number");
                      return absl::OkStatus();
                    },
                    [value] { return absl::StrCat(*value); }});
}

void FlagSet::Bool(const std::string& name, bool* value, const std::string& help) {
  flags_.push_back({name, help, true, false,
                    [name, value](const std::string& v) {
                      std::string l = absl::AsciiStrToLower(v);
                      if (l == "" || l == "1" || l == "true" || l == "yes") {
                        *value = true;
                      } else if (l == "0" || l == "false" || l == "no") {
                        *value = false;
                      } else {
                        return Bad(name, v, "true or false");
                      }
                      return absl::OkStatus();
                    },
                    [value] { return std::string(*value ? "true" : "false"); }});
}

void FlagSet::StringList(const std::string& name, std::vector<std::string>* values,
                         const std::string& help) {
  flags_.push_back({name, help, false, true,
                    [values](const std::string& v) {
                      values->push_back(v);
                      return absl::OkStatus();
                    },
                    [values] { return absl::StrJoin(*values, ","); }});
}

FlagSet::Flag* FlagSet::Find(const std::string& name) {
  for (Flag& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

bool FlagSet::WasSet(const std::string& name) const {
  for (const Flag& f : flags_) {
    if (f.name == name) return f.was_set;
  }
  return false;
}

absl::Status FlagSet::Parse(const Args& args) {
  // Environment first, so the command line overrides it.
  for (Flag& f : flags_) {
    std::string env = "BMSERVE_" + absl::AsciiStrToUpper(absl::StrReplaceAll(f.name, {{"-", "_"}}));
    if (const char* v = std::getenv(env.c_str()); v != nullptr) {
      if (f.is_list) {
        for (absl::string_view part : absl::StrSplit(v, ',', absl::SkipEmpty())) {
          if (auto s = f.set(std::string(part)); !s.ok()) return s;
        }
      } else if (auto s = f.set(v); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(env, ": ", s.message()));
      }
      f.was_set = true;
    }
  }
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      help_requested_ = true;
      return absl::OkStatus();
    }
    if (a.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", a, "'"));
    }
    std::string name = a.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    Flag* f = Find(name);
    if (f == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, " for '", command_, "' (see --help)"));
    }
    if (!has_value) {
      if (f->is_bool) {
        // `--flag` alone, or `--flag true|false`.
        if (i + 1 < args.size()) {
          std::string l = absl::AsciiStrToLower(args[i + 1]);
          if (l == "true" || l == "false") {
            value = args[++i];
          }
        }
      } else {
        if (i + 1 >= args.size()) {
          return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
        }
        value = args[++i];
      }
    }
    if (auto s = f->set(value); !s.ok()) return s;
    f->was_set = true;
  }
  return absl::OkStatus();
}

std::string FlagSet::Usage() const {
  std::string out = absl::StrCat("usage: bmserve ", command_, " [flags]\n\nflags:\n");
  for (const Flag& f : flags_) {
    std::string env = "BMSERVE_" + absl::AsciiStrToUpper(absl::StrReplaceAll(f.name, {{"-", "_"}}));
    // Secrets (e.g. --api-key set through the environment) are never printed.
    const bool secret = f.name.find("key") != std::string::npos && !f.get().empty();
    absl::StrAppend(&out, "  --", f.name, f.is_bool ? "" : " VALUE", "\n      ", f.help,
                    " (default: ", secret ? "<redacted>" : f.get(), "; env ", env, ")\n");
  }
  return out;
}

std::vector<std::string> FlagSet::EffectiveValues() const {
  std::vector<std::string> out;
  for (const Flag& f : flags_) {
    bool secret = f.name.find("key") != std::string::npos;
    out.push_back(absl::StrCat(f.name, "=", secret && !f.get().empty() ? "<redacted>" : f.get()));
  }
  return out;
}

}  // namespace bms
