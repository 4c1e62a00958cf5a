#include "tollgate/util/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string_view>

namespace tollgate::util {
namespace {

Error errno_error(const std::string& path, const char* what) {
  return make_error(path + ": " + what + ": " + std::strerror(errno));
}

// Closes a descriptor on every path out of a function.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

}  // namespace

Result<std::string> read_file(const std::string& path, std::size_t max_bytes) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return make_error(path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_error(path, "cannot stat");
  if (S_ISDIR(st.st_mode)) return make_error(path + ": is a directory");
  if (S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) > max_bytes) {
    return make_error(path + ": larger than " + std::to_string(max_bytes) + " bytes, not read");
  }
  std::string out;
  if (S_ISREG(st.st_mode)) out.reserve(static_cast<std::size_t>(st.st_size));
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(path, "cannot read");
    if (n == 0) break;
    if (out.size() + static_cast<std::size_t>(n) > max_bytes) {  // grew, or not a regular file
      return make_error(path + ": larger than " + std::to_string(max_bytes) + " bytes, not read");
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

Status write_file_atomically(const std::string& path, std::string_view bytes) {
  const std::filesystem::path target(path);
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  std::string tmp = (std::filesystem::path(dir) / ("." + target.filename().string() + ".XXXXXX"));
  Fd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (fd.get() < 0) return errno_error(tmp, "cannot create");
  auto fail = [&tmp](Error e) {
    ::unlink(tmp.c_str());
    return e;
  };
  std::string_view rest = bytes;
  while (!rest.empty()) {
    const ssize_t n = ::write(fd.get(), rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail(errno_error(tmp, "cannot write"));
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
  if (::fchmod(fd.get(), 0644) != 0) return fail(errno_error(tmp, "cannot chmod"));
  if (::fsync(fd.get()) != 0) return fail(errno_error(tmp, "cannot fsync"));
  if (::close(fd.release()) != 0) return fail(errno_error(tmp, "cannot close"));
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail(errno_error(path, "cannot rename"));
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() < 0 || ::fsync(dfd.get()) != 0) {
    return errno_error(dir, "written, but the directory cannot be fsynced");
  }
  return ok();
}

}  // namespace tollgate::util
