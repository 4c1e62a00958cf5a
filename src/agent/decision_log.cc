#include "tollgate/agent/decision_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "tollgate/util/json_text.h"
#include "tollgate/util/log.h"
#include "tollgate/util/strings.h"
#include "tollgate/util/time.h"

namespace tollgate::agent {
namespace {

void field(std::string& out, const char* name, const std::optional<std::string>& v) {
  if (!v) return;
  out += ",\"";
  out += name;
  out += "\":";
  util::append_json_string(out, *v);
}

}  // namespace

util::Result<std::unique_ptr<DecisionLog>> DecisionLog::open(
    const std::string& path, const std::vector<std::string>& header_allow_list,
    std::chrono::milliseconds check_every) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    return util::make_error("--decision-log " + path + ": " + std::strerror(errno));
  }
  std::set<std::string> allow;
  for (const auto& h : header_allow_list) allow.insert(util::lowered(h));
  return std::unique_ptr<DecisionLog>(new DecisionLog(path, std::move(allow), fd, check_every));
}

DecisionLog::DecisionLog(std::string path, std::set<std::string> allow, int fd,
                         std::chrono::milliseconds check_every)
    : path_(std::move(path)),
      allow_(std::move(allow)),
      check_every_(check_every),
      id_prefix_([] {
        std::random_device rd;
        char buf[17];
        std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
        return std::string(buf);
      }()),
      fd_(fd),
      last_check_(std::chrono::steady_clock::now()) {
  struct stat st {};
  if (::fstat(fd_, &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
}

DecisionLog::~DecisionLog() {
  if (fd_ >= 0) ::close(fd_);
}

std::string DecisionLog::line(const eval::Request* request, const Answer& answer,
                              const std::string& table_hash, std::uint64_t id) const {
  std::string out = "{\"time\":";
  util::append_json_string(out, util::rfc3339(std::chrono::system_clock::now()));
  out += ",\"id\":";
  util::append_json_string(out, id_prefix_ + "-" + std::to_string(id));
  out += ",\"table\":";
  if (table_hash.empty()) {
    out += "null";
  } else {
    util::append_json_string(out, table_hash);
  }
  out += ",\"request\":";
  if (request == nullptr) {
    out += "null";
  } else {
    const eval::Request& r = *request;
    out += "{\"protocol\":";
    out += r.tcp ? "\"tcp\"" : "\"http\"";
    field(out, "principal", r.principal);
    field(out, "sourceIp", r.source_ip);
    field(out, "remoteIp", r.remote_ip);
    field(out, "destinationIp", r.destination_ip);
    if (r.port) out += ",\"port\":" + std::to_string(*r.port);
    field(out, "method", r.method);
    field(out, "path", r.path);
    field(out, "host", r.host);
    field(out, "sni", r.sni);
    field(out, "requestPrincipal", r.request_principal);
    out += ",\"headers\":{";
    std::string redacted;
    bool first = true;
    for (const auto& [name, value] : r.headers) {
      if (allow_.contains(name)) {
        if (!first) out += ',';
        first = false;
        util::append_json_string(out, name);
        out += ':';
        util::append_json_string(out, value);
      } else {
        if (!redacted.empty()) redacted += ',';
        util::append_json_string(redacted, name);
      }
    }
    out += "},\"redactedHeaders\":[" + redacted + "]}";
  }
  out += ",\"decision\":";
  out += answer.body.empty() ? "null" : answer.body;
  out += '}';
  return out;
}

void DecisionLog::write(const eval::Request* request, const Answer& answer,
                        const std::string& table_hash) {
  std::string l =
      line(request, answer, table_hash, next_id_.fetch_add(1, std::memory_order_relaxed));
  l += '\n';
  std::lock_guard lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  if (now - last_check_ >= check_every_) {
    last_check_ = now;
    reopen_if_moved();
  }
  if (fd_ < 0) return;
  const ssize_t n = ::write(fd_, l.data(), l.size());
  if (n != static_cast<ssize_t>(l.size()) && !warned_) {
    warned_ = true;  // once: a full disk must not turn every request into a log line
    util::log_warn("the decision log cannot be written; decisions go on",
                   {{"file", path_}, {"error", n < 0 ? std::strerror(errno) : "short write"}});
  }
}

void DecisionLog::reopen_if_moved() {
  struct stat st {};
  if (::stat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) return;
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return;  // keep writing to the old one
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  if (::fstat(fd_, &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
  warned_ = false;
}

}  // namespace tollgate::agent
