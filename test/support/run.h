// Test helpers: run the built `tollgate` binary with files for stdin/stdout; temp files.
#pragma once

#include <sys/wait.h>
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace tollgate::testing {

struct RunResult {
  int status = -1;
  std::string out;
  std::string err;
};

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream b;
  b << in.rdbuf();
  return b.str();
}

inline void write_file(const std::filesystem::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary);
  out << s;
}

// A directory removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tollgate-test-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Runs `tollgate <args>` (args already shell-quoted) with `input` on stdin.
inline RunResult run_tollgate(const std::string& args, const std::string& input = "") {
  TempDir dir;
  write_file(dir.path() / "in", input);
  const std::string cmd = std::string("'") + TOLLGATE_BINARY + "' " + args + " < '" +
                          (dir.path() / "in").string() + "' > '" + (dir.path() / "out").string() +
                          "' 2> '" + (dir.path() / "err").string() + "'";
  RunResult r;
  const int raw = std::system(cmd.c_str());
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  r.out = read_file(dir.path() / "out");
  r.err = read_file(dir.path() / "err");
  return r;
}

inline std::string source_path(const std::string& rel) {
  return std::string(TOLLGATE_SOURCE_DIR) + "/" + rel;
}

}  // namespace tollgate::testing
