// A minimal blocking HTTP/1.1 client for tests and benches that talk to a `tollgate run`
// child process: one request per connection (Connection: close), the status and body back.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdint>
#include <optional>
#include <string>

#include "tollgate/util/strings.h"

namespace tollgate::testing {

struct HttpReply {
  int status = 0;
  std::string headers, body;
};

// `method` `target` on 127.0.0.1:`port` with extra header lines (each ending in \r\n) and
// `body`; nullopt when the connection fails or `timeout_seconds` pass.
inline std::optional<HttpReply> http_request(std::uint16_t port, const std::string& method,
                                             const std::string& target,
                                             const std::string& extra_headers,
                                             const std::string& body, int timeout_seconds = 10) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  timeval tv{timeout_seconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string raw;
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  if (ok) {
    std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra_headers;
    if (!body.empty() || method == "POST")
      req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    req += "Connection: close\r\n\r\n" + body;
    ok = ::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size());
  }
  char buf[65536];
  while (ok) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0) ok = false;
    if (n <= 0) break;
    raw.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  const auto head_end = raw.find("\r\n\r\n");
  if (!ok || raw.size() < 12 || raw.compare(0, 5, "HTTP/") != 0 || head_end == std::string::npos) {
    return std::nullopt;
  }
  HttpReply r;
  r.status = std::stoi(raw.substr(9, 3));
  r.headers = raw.substr(0, head_end);
  r.body = raw.substr(head_end + 4);
  return r;
}

// GET `target`; see http_request.
inline std::optional<HttpReply> http_get(std::uint16_t port, const std::string& target,
                                         const std::string& extra_headers = "",
                                         int timeout_seconds = 10) {
  return http_request(port, "GET", target, extra_headers, "", timeout_seconds);
}

// The value of a response header (case-insensitive name), or "".
inline std::string header_of(const std::string& headers, std::string name) {
  const std::string lower = util::lowered(headers);
  util::to_lower(name);
  const auto pos = lower.find("\r\n" + name + ":");
  if (pos == std::string::npos) return "";
  const auto start = headers.find_first_not_of(' ', pos + name.size() + 3);
  return headers.substr(start, headers.find("\r\n", start) - start);
}

}  // namespace tollgate::testing
