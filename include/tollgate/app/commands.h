// Subcommand entry points behind the CLI parser (app module internals).
#pragma once

#include <string>
#include <vector>

namespace tollgate::app {

struct CheckOptions {
  std::vector<std::string> files;
  std::string workload;  // "ns/pod" or "ns/k=v,k2=v2/serviceAccount"
  std::string request;   // JSON, or @file
  std::string mesh;      // JSON, or @file
  std::string output = "text";
};
int run_check(const CheckOptions& o);

struct LintOptions {
  std::vector<std::string> files;
  std::string mesh;
  std::string output = "text";
};
int run_lint(const LintOptions& o);

}  // namespace tollgate::app
