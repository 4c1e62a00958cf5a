// A small HTTP/1.1 client for the server tests: one connection, plain or TLS (trusting a
// given CA, optionally presenting a client certificate), requests written raw and answers read
// with a timeout, never hanging. Header-only; one Conn per thread.
#pragma once

#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "support/certs.h"
#include "support/deadlines.h"
#include "tollgate/util/strings.h"

namespace tollgate::testing {

using namespace std::chrono_literals;

struct Reply {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
  nlohmann::json body_json() const { return nlohmann::json::parse(body); }
};

inline std::string get(const std::string& target, const std::string& headers = "") {
  return "GET " + target + " HTTP/1.1\r\nHost: tollgate\r\n" + headers + "\r\n";
}

inline std::string post(const std::string& target, const std::string& body) {
  return "POST " + target + " HTTP/1.1\r\nHost: tollgate\r\nContent-Type: application/json\r\n" +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

inline X509* read_cert(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return x;
}

inline EVP_PKEY* read_key(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* k = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return k;
}

// One connection; plain, or TLS after start_tls(). Reads time out instead of hanging.
class Conn {
 public:
  // receive_buffer > 0: a small SO_RCVBUF, so that the server cannot write a large answer at once.
  explicit Conn(std::uint16_t port, int receive_buffer = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (receive_buffer > 0) {
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~Conn() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  bool connected() const { return connected_; }

  // TLS handshake trusting `ca_pem`; with `client`, presents that certificate.
  bool start_tls(const std::string& ca_pem, const Pem* client = nullptr) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    X509* ca = read_cert(ca_pem);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx_), ca);
    X509_free(ca);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    if (client != nullptr) {
      X509* c = read_cert(client->certificate);
      EVP_PKEY* k = read_key(client->private_key);
      SSL_CTX_use_certificate(ctx_, c);
      SSL_CTX_use_PrivateKey(ctx_, k);
      X509_free(c);
      EVP_PKEY_free(k);
    }
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    return SSL_connect(ssl_) == 1;
  }

  std::string peer_common_name() const {
    X509* c = SSL_get1_peer_certificate(ssl_);
    if (c == nullptr) return "";
    char buf[256] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(c), NID_commonName, buf, sizeof buf);
    X509_free(c);
    return buf;
  }

  bool send(std::string_view data) {
    while (!data.empty()) {
      const long n = ssl_ != nullptr ? SSL_write(ssl_, data.data(), static_cast<int>(data.size()))
                                     : ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // Some bytes: > 0 read, 0 the peer closed (or reset), -1 nothing before the timeout.
  long recv_some(std::chrono::milliseconds timeout) {
    if (ssl_ == nullptr || SSL_pending(ssl_) == 0) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return -1;
    }
    char buf[16384];
    const long n =
        ssl_ != nullptr ? SSL_read(ssl_, buf, sizeof buf) : ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return 0;
    in_.append(buf, static_cast<std::size_t>(n));
    return n;
  }

  // The next response, or nullopt when the connection closes or nothing comes in time.
  std::optional<Reply> reply(std::chrono::milliseconds timeout = deadline(10s)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto left = [&] {
      return std::max(std::chrono::milliseconds(1),
                      std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now()));
    };
    std::size_t end;
    while ((end = in_.find("\r\n\r\n")) == std::string::npos) {
      if (std::chrono::steady_clock::now() >= deadline || recv_some(left()) <= 0)
        return std::nullopt;
    }
    Reply r;
    const std::string head = in_.substr(0, end);
    in_.erase(0, end + 4);
    std::size_t line_end = head.find("\r\n");
    const std::string status_line = head.substr(0, line_end);
    if (status_line.size() < 12) return std::nullopt;
    r.status = std::stoi(status_line.substr(9, 3));
    while (line_end != std::string::npos) {
      const std::size_t next = head.find("\r\n", line_end + 2);
      const std::string line = head.substr(line_end + 2, next - line_end - 2);
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        const std::string name = util::lowered(line.substr(0, colon));
        std::string value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.erase(0, 1);
        r.headers[name] = value;
      }
      line_end = next;
    }
    if (r.status == 304) return r;
    const std::size_t length =
        std::stoul(r.header("content-length").empty() ? "0" : r.header("content-length"));
    while (in_.size() < length) {
      if (std::chrono::steady_clock::now() >= deadline || recv_some(left()) <= 0)
        return std::nullopt;
    }
    r.body = in_.substr(0, length);
    in_.erase(0, length);
    return r;
  }

  // Whether the server closes the connection within `timeout` (any bytes are discarded).
  bool closed_within(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      const long n = recv_some(std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now() + 1ms));
      if (n == 0) return true;
    }
    return false;
  }

  std::optional<Reply> request(const std::string& raw,
                               std::chrono::milliseconds timeout = deadline(10s)) {
    if (!send(raw)) return std::nullopt;
    return reply(timeout);
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string in_;
};

}  // namespace tollgate::testing
