// The only translation unit of the k8s module that sees Boost.Beast and OpenSSL.
#include <utility>  // before Boost under C++20 with GCC 12

#include "tollgate/k8s/transport.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <limits>
#include <mutex>
#include <optional>

#include "tollgate/util/log.h"
#include "tollgate/util/strings.h"

namespace tollgate::k8s {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

namespace {

constexpr std::size_t kMaxErrorBody = 1 << 20;
constexpr std::size_t kReadBuffer = 1 << 16;

bool is_ip_literal(const std::string& host) {
  error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

std::string describe(const error_code& ec) {
  if (ec == beast::error::timeout) return "timed out";
  if (ec == asio::error::operation_aborted) return "cancelled";
  return ec.message();
}

class BeastTransport final : public Transport {
 public:
  BeastTransport(ClusterConfig config, std::shared_ptr<TokenSource> tokens)
      : config_(std::move(config)), tokens_(std::move(tokens)) {
    buffer_.reserve(kReadBuffer);
  }

  util::Status init() {
    if (config_.scheme != "https") return util::ok();
    ctx_.emplace(ssl::context::tls_client);
    ctx_->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                      ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    error_code ec;
    if (config_.insecure_skip_tls_verify) {
      util::log_warn(
          "insecure-skip-tls-verify is set: the API server's certificate is NOT verified; "
          "anyone on the path can impersonate it",
          {{"server", config_.server}});
      ctx_->set_verify_mode(ssl::verify_none);
    } else {
      ctx_->set_verify_mode(ssl::verify_peer);
      if (config_.ca_pem.empty()) {
        ctx_->set_default_verify_paths(ec);
      } else {
        ctx_->add_certificate_authority(asio::buffer(config_.ca_pem), ec);
      }
      if (ec) return util::make_error("the CA certificate cannot be used: " + ec.message());
    }
    if (!config_.client_cert_pem.empty() || !config_.client_key_pem.empty()) {
      ctx_->use_certificate_chain(asio::buffer(config_.client_cert_pem), ec);
      if (ec) return util::make_error("the client certificate cannot be used: " + ec.message());
      ctx_->use_private_key(asio::buffer(config_.client_key_pem), ssl::context::pem, ec);
      if (ec) return util::make_error("the client key cannot be used: " + ec.message());
    }
    return util::ok();
  }

  util::Result<ApiResponse> send(const Call& call) override {
    const auto verb = http::string_to_verb(call.method);
    if (verb == http::verb::unknown) return util::make_error("unknown method " + call.method);
    for (int attempt = 0;; ++attempt) {
      const bool reused = connected();
      TOLLGATE_TRY_STATUS(connect(call.timeout));
      http::request<http::string_body> req{verb, config_.base_path + call.target, 11};
      set_common_fields(req);
      for (const auto& [name, value] : call.headers) req.set(name, value);
      if (!call.body.empty() || verb == http::verb::post || verb == http::verb::put ||
          verb == http::verb::patch) {
        req.set(http::field::content_type, call.content_type);
        req.body() = call.body;
        req.prepare_payload();
      }
      expire(call.timeout);
      auto ec = run([&](auto& s, auto done) { http::async_write(s, req, done); });
      http::response_parser<http::string_body> parser;
      parser.body_limit(call.max_body);
      parser.header_limit(64 * 1024);
      if (!ec) ec = run([&](auto& s, auto done) { http::async_read(s, buffer_, parser, done); });
      if (ec && reused && attempt == 0 && stale(ec)) {
        close();  // the server closed the idle keep-alive connection: once more, fresh
        continue;
      }
      if (ec) return fail(call.method + " " + call.target, ec);
      ApiResponse out = convert(parser.get());
      out.body = std::move(parser.get().body());
      if (!parser.get().keep_alive()) close();
      return out;
    }
  }

  util::Result<ApiResponse> stream(const std::string& target, std::chrono::milliseconds idle,
                                   std::size_t max_line,
                                   const std::function<bool(std::string_view)>& on_line) override {
    std::optional<http::response_parser<http::buffer_body>> parser_slot;
    for (int attempt = 0;; ++attempt) {
      const bool reused = connected();
      TOLLGATE_TRY_STATUS(connect(idle));
      auto req = request(target);
      expire(idle);
      auto ec = run([&](auto& s, auto done) { http::async_write(s, req, done); });
      parser_slot.emplace();
      // Not boost::none: Boost 1.74 compares a Content-Length with an empty optional limit
      // as "exceeded" (basic_parser.ipp, finish_header).
      parser_slot->body_limit(std::numeric_limits<std::uint64_t>::max());
      parser_slot->header_limit(64 * 1024);
      if (!ec) {
        ec = run(
            [&](auto& s, auto done) { http::async_read_header(s, buffer_, *parser_slot, done); });
      }
      if (ec && reused && attempt == 0 && stale(ec)) {
        close();
        continue;
      }
      if (ec) return fail("GET " + target, ec);
      break;
    }
    auto& parser = *parser_slot;
    stream_idle_ = idle;
    ApiResponse out = convert(parser.get());
    const bool ok = out.status == 200;
    std::string line;
    char chunk[64 * 1024];
    while (!parser.is_done()) {
      parser.get().body().data = chunk;
      parser.get().body().size = sizeof chunk;
      expire(stream_idle_);
      auto ec = run([&](auto& s, auto done) { http::async_read_some(s, buffer_, parser, done); });
      if (ec == http::error::need_buffer) ec = {};
      if (ec) {
        close();
        if (ec == beast::error::timeout) {
          return util::make_error("watch stalled: no data for " +
                                  std::to_string(stream_idle_.count()) + " ms");
        }
        return fail("watch " + target, ec);
      }
      const std::size_t n = sizeof chunk - parser.get().body().size;
      if (!ok) {
        if (out.body.size() + n <= kMaxErrorBody) out.body.append(chunk, n);
        continue;
      }
      std::string_view data(chunk, n);
      while (!data.empty()) {
        const auto nl = data.find('\n');
        if (nl == std::string_view::npos) {
          line.append(data);
          break;
        }
        line.append(data.substr(0, nl));
        data.remove_prefix(nl + 1);
        if (!line.empty() && !on_line(line)) {
          close();  // the rest of the stream is not wanted
          return out;
        }
        line.clear();
      }
      if (line.size() > max_line) {
        close();
        return util::make_error("watch event longer than " + std::to_string(max_line) + " bytes");
      }
    }
    if (ok && !line.empty()) on_line(line);
    if (!parser.get().keep_alive()) close();
    return out;
  }

  void set_idle(std::chrono::milliseconds idle) override { stream_idle_ = idle; }

  void cancel() override {
    cancelled_ = true;
    // Only the socket is closed here: a pending operation still refers to the stream objects,
    // which are destroyed by close() once run() has returned.
    asio::post(ioc_, [this] { abort_io(); });
  }

 private:
  template <typename Body>
  ApiResponse convert(const http::response<Body>& res) {
    ApiResponse out;
    out.status = static_cast<int>(res.result_int());
    for (const auto& f : res) {
      const auto name = f.name_string();
      out.headers[util::lowered({name.data(), name.size()})] = std::string(f.value());
    }
    return out;
  }

  template <typename Body>
  void set_common_fields(http::request<Body>& req) {
    req.set(http::field::host, host_header());
    req.set(http::field::user_agent, "tollgate/0.1");
    req.set(http::field::accept, "application/json");
    if (tokens_) {
      const std::string token = tokens_->token();
      if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    }
    req.keep_alive(true);
  }

  http::request<http::empty_body> request(const std::string& target) {
    http::request<http::empty_body> req{http::verb::get, config_.base_path + target, 11};
    set_common_fields(req);
    return req;
  }

  std::string host_header() const {
    const bool v6 = config_.host.find(':') != std::string::npos;
    std::string h = v6 ? "[" + config_.host + "]" : config_.host;
    const bool default_port = (config_.scheme == "https" && config_.port == "443") ||
                              (config_.scheme == "http" && config_.port == "80");
    if (!default_port) h += ":" + config_.port;
    return h;
  }

  util::Error fail(const std::string& what, const error_code& ec) {
    close();
    return util::make_error(what + ": " + describe(ec) + " (" + config_.server + ")");
  }

  bool connected() const { return tls_.has_value() || plain_.has_value(); }

  static bool stale(const error_code& ec) {
    return ec == http::error::end_of_stream || ec == asio::error::eof ||
           ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
           ec == ssl::error::stream_truncated;
  }

  void expire(std::chrono::milliseconds d) {
    if (tls_) {
      beast::get_lowest_layer(*tls_).expires_after(d);
    } else if (plain_) {
      plain_->expires_after(d);
    }
  }

  // Starts an async operation on the open stream and runs the io_context until it is done.
  template <typename Start>
  error_code run(Start start) {
    if (cancelled_) return asio::error::operation_aborted;
    error_code result = asio::error::would_block;
    auto done = [&result](error_code ec, std::size_t) { result = ec; };
    if (tls_) {
      start(*tls_, done);
    } else if (plain_) {
      start(*plain_, done);
    } else {
      return asio::error::not_connected;
    }
    ioc_.restart();
    ioc_.run();
    if (cancelled_ && !result) result = asio::error::operation_aborted;
    return result;
  }

  util::Status connect(std::chrono::milliseconds timeout) {
    if (cancelled_) return util::make_error("cancelled");
    if (tls_ || plain_) return util::ok();
    // A dead server must not hold a watcher for a whole watch timeout.
    timeout = std::min(timeout, std::chrono::milliseconds(15000));
    tcp::resolver resolver(ioc_);
    error_code ec;
    auto endpoints = resolver.resolve(config_.host, config_.port, ec);
    if (ec) {
      return util::make_error("cannot resolve " + config_.host + ": " + ec.message() + " (" +
                              config_.server + ")");
    }
    beast::tcp_stream tcp_stream(ioc_);
    tcp_stream.expires_after(timeout);
    connecting_ = &tcp_stream;  // cancel() closes it too
    struct Clear {
      beast::tcp_stream*& p;
      ~Clear() { p = nullptr; }
    } clear{connecting_};
    error_code cec = asio::error::would_block;
    tcp_stream.async_connect(endpoints, [&cec](error_code e, const tcp::endpoint&) { cec = e; });
    ioc_.restart();
    ioc_.run();
    if (cancelled_) return util::make_error("cancelled");
    if (cec) {
      return util::make_error("cannot connect to " + config_.server + ": " + describe(cec));
    }
    error_code ignored;  // requests are whole writes; Nagle would only delay them
    tcp_stream.socket().set_option(tcp::no_delay(true), ignored);
    if (!ctx_) {
      plain_.emplace(std::move(tcp_stream));
      return util::ok();
    }
    tls_.emplace(std::move(tcp_stream), *ctx_);
    const std::string name =
        config_.tls_server_name.empty() ? config_.host : config_.tls_server_name;
    SSL* ssl_handle = tls_->native_handle();
    if (!is_ip_literal(name)) SSL_set_tlsext_host_name(ssl_handle, name.c_str());
    if (!config_.insecure_skip_tls_verify) {
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl_handle);
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      const int set = is_ip_literal(name) ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str())
                                          : X509_VERIFY_PARAM_set1_host(param, name.c_str(), 0);
      if (set != 1) {
        close();
        return util::make_error("cannot verify the server name " + name);
      }
    }
    beast::get_lowest_layer(*tls_).expires_after(timeout);
    error_code hec = asio::error::would_block;
    tls_->async_handshake(ssl::stream_base::client, [&hec](error_code e) { hec = e; });
    ioc_.restart();
    ioc_.run();
    if (cancelled_ && !hec) hec = asio::error::operation_aborted;
    if (hec) {
      std::string why = describe(hec);
      const long verify = SSL_get_verify_result(ssl_handle);
      if (verify != X509_V_OK) {
        why = std::string("certificate verification failed: ") +
              X509_verify_cert_error_string(verify);
      }
      close();
      return util::make_error("TLS handshake with " + config_.server + " failed: " + why);
    }
    return util::ok();
  }

  void abort_io() {
    error_code ignored;
    if (connecting_ != nullptr) connecting_->socket().close(ignored);
    if (tls_) beast::get_lowest_layer(*tls_).socket().close(ignored);
    if (plain_) plain_->socket().close(ignored);
  }

  void close() {
    error_code ignored;
    if (tls_) {
      beast::get_lowest_layer(*tls_).socket().shutdown(tcp::socket::shutdown_both, ignored);
      beast::get_lowest_layer(*tls_).socket().close(ignored);
      tls_.reset();
    }
    if (plain_) {
      plain_->socket().shutdown(tcp::socket::shutdown_both, ignored);
      plain_->socket().close(ignored);
      plain_.reset();
    }
    buffer_.clear();
  }

  ClusterConfig config_;
  std::shared_ptr<TokenSource> tokens_;
  asio::io_context ioc_{1};
  std::optional<ssl::context> ctx_;
  std::optional<beast::tcp_stream> plain_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;
  // Beast reads at most the buffer's free capacity (at least 512 bytes) per read: without
  // room reserved, a 270 MB list arrives in half a million reads.
  beast::flat_buffer buffer_;
  beast::tcp_stream* connecting_ = nullptr;   // during connect(); touched on the I/O thread only
  std::chrono::milliseconds stream_idle_{0};  // during stream(): set_idle() changes it
  std::atomic<bool> cancelled_{false};
};

}  // namespace

util::Result<std::unique_ptr<Transport>> make_transport(const ClusterConfig& config,
                                                        std::shared_ptr<TokenSource> tokens) {
  if (config.scheme != "https" && config.scheme != "http") {
    return util::make_error("server " + config.server + ": the scheme must be https or http");
  }
  auto t = std::make_unique<BeastTransport>(config, std::move(tokens));
  TOLLGATE_TRY_STATUS(t->init());
  return std::unique_ptr<Transport>(std::move(t));
}

}  // namespace tollgate::k8s
