#include "tollgate/k8s/config.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <map>
#include <set>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tollgate/policy/parse.h"
#include "tollgate/util/base64.h"
#include "tollgate/util/file.h"
#include "tollgate/util/strings.h"

namespace tollgate::k8s {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr std::size_t kMaxConfigFileBytes = 16u << 20;  // kubeconfig, CA bundle, cert, key
constexpr std::size_t kMaxTokenBytes = 1u << 20;

std::string in_quotes(const std::string& s) { return "\"" + s + "\""; }

std::string trim(std::string_view s) { return std::string(util::trim(s)); }

std::string resolve_relative(const std::string& config_file, const std::string& p) {
  if (p.empty() || fs::path(p).is_absolute()) return p;
  const fs::path dir = fs::path(config_file).parent_path();
  return dir.empty() ? p : (dir / p).string();
}

// A kubeconfig entry (cluster, user or context) with where it was defined.
struct Entry {
  std::string file;
  std::string where;  // "clusters[0].cluster"
  json body;          // the mapping under `where` (an empty object when absent)
};

struct Merged {
  std::map<std::string, Entry> clusters, users, contexts;
  std::string current_context;
  std::string current_context_file;
};

util::Status index_section(const std::string& file, const json& doc, const std::string& section,
                           const std::string& inner, std::map<std::string, Entry>& out) {
  const auto it = doc.find(section);
  if (it == doc.end() || it->is_null()) return util::ok();
  if (!it->is_array()) return util::make_error(file + ": " + section + ": must be a list");
  std::set<std::string> seen;
  for (std::size_t i = 0; i < it->size(); ++i) {
    const json& item = (*it)[i];
    const std::string where = section + "[" + std::to_string(i) + "]";
    if (!item.is_object()) return util::make_error(file + ": " + where + ": must be a mapping");
    const auto name = item.find("name");
    if (name == item.end() || !name->is_string() || name->get<std::string>().empty()) {
      return util::make_error(file + ": " + where + ".name: missing or not a string");
    }
    const std::string n = name->get<std::string>();
    if (!seen.insert(n).second) {
      return util::make_error(file + ": " + where + ".name: duplicate name " + in_quotes(n));
    }
    json body = json::object();
    const auto b = item.find(inner);
    if (b != item.end() && !b->is_null()) {
      if (!b->is_object()) {
        return util::make_error(file + ": " + where + "." + inner + ": must be a mapping");
      }
      body = *b;
    }
    out.emplace(n, Entry{file, where + "." + inner, std::move(body)});  // first file wins
  }
  return util::ok();
}

// A string field of an entry: "" when absent or null.
util::Result<std::string> string_field(const Entry& e, const std::string& key) {
  const auto it = e.body.find(key);
  if (it == e.body.end() || it->is_null()) return std::string();
  if (!it->is_string()) {
    return util::make_error(e.file + ": " + e.where + "." + key + ": must be a string");
  }
  return it->get<std::string>();
}

util::Error field_error(const Entry& e, const std::string& key, const std::string& what) {
  return util::make_error(e.file + ": " + e.where + "." + key + ": " + what);
}

// PEM (or any bytes) from `<key>-data` (base64) or `<key>` (a file), not both.
util::Result<std::string> data_or_file(const Entry& e, const std::string& key) {
  TOLLGATE_TRY(data, string_field(e, key + "-data"));
  TOLLGATE_TRY(file, string_field(e, key));
  if (!data.empty() && !file.empty()) {
    return field_error(e, key, "both " + key + " and " + key + "-data are set; use one");
  }
  if (!data.empty()) {
    auto decoded = util::decode_base64(data);
    if (!decoded.ok()) return field_error(e, key + "-data", decoded.error().message);
    if (decoded->empty()) return field_error(e, key + "-data", "decodes to nothing");
    return std::move(decoded).value();
  }
  if (!file.empty()) {
    auto text = util::read_file(resolve_relative(e.file, file), kMaxConfigFileBytes);
    if (!text.ok()) return field_error(e, key, text.error().message);
    if (text->empty()) return field_error(e, key, resolve_relative(e.file, file) + " is empty");
    return std::move(text).value();
  }
  return std::string();
}

util::Status reject_keys(const Entry& e, const std::vector<std::string>& keys,
                         const std::string& why) {
  for (const auto& k : keys) {
    const auto it = e.body.find(k);
    if (it != e.body.end() && !it->is_null()) return field_error(e, k, why);
  }
  return util::ok();
}

util::Status apply_cluster(const Entry& e, ClusterConfig& c) {
  TOLLGATE_TRY_STATUS(reject_keys(e, {"proxy-url"}, "proxies are not supported"));
  TOLLGATE_TRY(server, string_field(e, "server"));
  if (server.empty()) return field_error(e, "server", "missing");
  c.server = server;
  auto parsed = parse_server(c);
  if (!parsed.ok()) return field_error(e, "server", parsed.error().message);
  c = std::move(parsed).value();
  TOLLGATE_TRY(ca, data_or_file(e, "certificate-authority"));
  c.ca_pem = std::move(ca);
  const auto insecure = e.body.find("insecure-skip-tls-verify");
  if (insecure != e.body.end() && !insecure->is_null()) {
    if (!insecure->is_boolean()) return field_error(e, "insecure-skip-tls-verify", "not a boolean");
    c.insecure_skip_tls_verify = insecure->get<bool>();
  }
  if (c.insecure_skip_tls_verify && !c.ca_pem.empty()) {
    // As kubectl: a CA and "do not verify" contradict each other.
    return field_error(e, "insecure-skip-tls-verify",
                       "cannot be combined with a certificate authority");
  }
  TOLLGATE_TRY(sni, string_field(e, "tls-server-name"));
  c.tls_server_name = std::move(sni);
  return util::ok();
}

util::Status apply_user(const std::string& name, const Entry& e, ClusterConfig& c) {
  const std::string user = " (user " + in_quotes(name) + ")";
  TOLLGATE_TRY_STATUS(reject_keys(e, {"exec"},
                                  "exec credential plugins are not supported" + user +
                                      "; use a token, tokenFile or client certificate"));
  TOLLGATE_TRY_STATUS(reject_keys(e, {"auth-provider"},
                                  "auth-provider plugins are not supported" + user +
                                      "; use a token, tokenFile or client certificate"));
  TOLLGATE_TRY_STATUS(
      reject_keys(e, {"username", "password"}, "basic authentication is not supported" + user));
  TOLLGATE_TRY_STATUS(reject_keys(e, {"as", "as-uid", "as-groups", "as-user-extra"},
                                  "impersonation is not supported" + user));

  TOLLGATE_TRY(cert, data_or_file(e, "client-certificate"));
  TOLLGATE_TRY(key, data_or_file(e, "client-key"));
  if (!cert.empty() && key.empty()) {
    return field_error(e, "client-key", "missing: client-certificate is set" + user);
  }
  if (cert.empty() && !key.empty()) {
    return field_error(e, "client-certificate", "missing: client-key is set" + user);
  }
  c.client_cert_pem = std::move(cert);
  c.client_key_pem = std::move(key);
  TOLLGATE_TRY(token, string_field(e, "token"));
  c.token = trim(token);
  TOLLGATE_TRY(token_file, string_field(e, "tokenFile"));
  if (!token_file.empty()) {
    c.token_file = resolve_relative(e.file, token_file);
    auto t = util::read_file(c.token_file, kMaxTokenBytes);  // read once: fail early
    if (!t.ok()) return field_error(e, "tokenFile", t.error().message);
  }
  return util::ok();
}

util::Result<ClusterConfig> load_kubeconfig_impl(const std::string& paths,
                                                 const std::string& context) {
  std::vector<std::string> files;
  for (std::size_t start = 0;;) {
    const std::size_t colon = paths.find(':', start);
    std::string p = paths.substr(start, colon == std::string::npos ? colon : colon - start);
    if (!p.empty() && std::find(files.begin(), files.end(), p) == files.end()) {
      files.push_back(std::move(p));
    }
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  if (files.empty()) return util::make_error("no kubeconfig file given");

  Merged m;
  int loaded = 0;
  for (const auto& file : files) {
    std::error_code ec;
    if (files.size() > 1 && !fs::exists(file, ec) && !ec) continue;  // as kubectl does
    TOLLGATE_TRY(text, util::read_file(file, kMaxConfigFileBytes));
    TOLLGATE_TRY(doc, policy::yaml_to_json(text, file));
    ++loaded;
    if (doc.is_null()) continue;  // an empty file is an empty config
    if (!doc.is_object()) return util::make_error(file + ": a kubeconfig must be a mapping");
    TOLLGATE_TRY_STATUS(index_section(file, doc, "clusters", "cluster", m.clusters));
    TOLLGATE_TRY_STATUS(index_section(file, doc, "users", "user", m.users));
    TOLLGATE_TRY_STATUS(index_section(file, doc, "contexts", "context", m.contexts));
    const auto cur = doc.find("current-context");
    if (cur != doc.end() && !cur->is_null()) {
      if (!cur->is_string()) return util::make_error(file + ": current-context: not a string");
      if (m.current_context.empty() && !cur->get<std::string>().empty()) {
        m.current_context = cur->get<std::string>();
        m.current_context_file = file;
      }
    }
  }
  if (loaded == 0) return util::make_error(paths + ": none of these kubeconfig files exists");

  const std::string ctx_name = context.empty() ? m.current_context : context;
  if (ctx_name.empty()) {
    return util::make_error(paths + ": no context given and current-context is not set");
  }
  const auto ctx = m.contexts.find(ctx_name);
  if (ctx == m.contexts.end()) {
    if (context.empty()) {
      return util::make_error(m.current_context_file + ": current-context: context " +
                              in_quotes(ctx_name) + " not found");
    }
    return util::make_error(paths + ": context " + in_quotes(ctx_name) + " not found");
  }
  const Entry& cx = ctx->second;

  ClusterConfig c;
  TOLLGATE_TRY(cluster_name, string_field(cx, "cluster"));
  if (cluster_name.empty()) {
    return field_error(cx, "cluster", "missing (context " + in_quotes(ctx_name) + ")");
  }
  const auto cluster = m.clusters.find(cluster_name);
  if (cluster == m.clusters.end()) {
    return field_error(cx, "cluster", "cluster " + in_quotes(cluster_name) + " not found");
  }
  TOLLGATE_TRY_STATUS(apply_cluster(cluster->second, c));

  TOLLGATE_TRY(user_name, string_field(cx, "user"));
  if (!user_name.empty()) {  // no user: anonymous, as kubectl allows
    const auto user = m.users.find(user_name);
    if (user == m.users.end()) {
      return field_error(cx, "user", "user " + in_quotes(user_name) + " not found");
    }
    TOLLGATE_TRY_STATUS(apply_user(user_name, user->second, c));
  }
  TOLLGATE_TRY(ns, string_field(cx, "namespace"));
  c.namespace_ = ns.empty() ? "default" : ns;
  c.description = "kubeconfig " + paths + " context " + in_quotes(ctx_name);
  return c;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

bool valid_port(const std::string& p) {
  if (p.empty() || p.size() > 5) return false;
  if (!std::all_of(p.begin(), p.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
    return false;
  }
  const int n = std::stoi(p);
  return n >= 1 && n <= 65535;
}

}  // namespace

util::Result<ClusterConfig> parse_server(ClusterConfig c) {
  const std::string& s = c.server;
  const std::string bad = "server " + in_quotes(s) + ": ";
  if (s.empty()) return util::make_error("server: empty");
  const std::size_t sep = s.find("://");
  if (sep == std::string::npos) {
    return util::make_error(bad + "no scheme (expected https://host[:port][/path])");
  }
  std::string scheme = util::lowered(std::string_view(s).substr(0, sep));
  if (scheme != "https" && scheme != "http") {
    return util::make_error(bad + "scheme " + in_quotes(scheme) + " is not http or https");
  }
  const std::string rest = s.substr(sep + 3);
  const std::size_t end = rest.find_first_of("/?#");
  if (end != std::string::npos && rest[end] != '/') {
    return util::make_error(bad + "a query or fragment is not allowed");
  }
  const std::string authority = rest.substr(0, end);
  std::string path = end == std::string::npos ? "" : rest.substr(end);
  if (path.find_first_of("?#") != std::string::npos) {
    return util::make_error(bad + "a query or fragment is not allowed");
  }
  if (authority.find('@') != std::string::npos) {
    return util::make_error(bad + "user info in the URL is not allowed");
  }
  if (authority.empty()) return util::make_error(bad + "host is empty");

  std::string host, port;
  bool has_port = false;
  if (authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string::npos) return util::make_error(bad + "IPv6 host lacks ']'");
    host = authority.substr(1, close - 1);
    const std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return util::make_error(bad + "unexpected text after ']'");
      port = after.substr(1);
      has_port = true;
    }
    const bool ok = !host.empty() && host.find(':') != std::string::npos &&
                    std::all_of(host.begin(), host.end(), [](unsigned char ch) {
                      return std::isxdigit(ch) || ch == ':' || ch == '.';
                    });
    if (!ok) return util::make_error(bad + "host " + in_quotes(host) + " is not an IPv6 address");
  } else {
    const std::size_t colon = authority.find(':');
    if (colon != std::string::npos && authority.find(':', colon + 1) != std::string::npos) {
      return util::make_error(bad + "an IPv6 host must be in brackets, e.g. https://[::1]:6443");
    }
    host = authority.substr(0, colon);
    if (colon != std::string::npos) {
      port = authority.substr(colon + 1);
      has_port = true;
    }
    const bool ok = !host.empty() && std::all_of(host.begin(), host.end(), [](unsigned char ch) {
      return std::isalnum(ch) || ch == '.' || ch == '-' || ch == '_';
    });
    if (!ok) return util::make_error(bad + "host " + in_quotes(host) + " is not a valid host name");
  }
  if (has_port && !valid_port(port)) {
    return util::make_error(bad + "port " + in_quotes(port) + " is not a number from 1 to 65535");
  }
  if (!has_port) port = scheme == "https" ? "443" : "80";
  while (!path.empty() && path.back() == '/') path.pop_back();

  c.scheme = std::move(scheme);
  c.host = std::move(host);
  c.port = std::move(port);
  c.base_path = std::move(path);
  return c;
}

util::Result<ClusterConfig> load_kubeconfig(const std::string& paths, const std::string& context) {
  try {
    return load_kubeconfig_impl(paths, context);
  } catch (const std::exception& e) {  // nlohmann or allocation: keep it inside the module
    return util::make_error(paths + ": " + e.what());
  }
}

util::Result<ClusterConfig> in_cluster_config(const std::string& dir) {
  const std::string host = env("KUBERNETES_SERVICE_HOST");
  const std::string port = env("KUBERNETES_SERVICE_PORT");
  if (host.empty() || port.empty()) {
    return util::make_error(std::string("in-cluster: ") +
                            (host.empty() ? "KUBERNETES_SERVICE_HOST" : "KUBERNETES_SERVICE_PORT") +
                            " is not set (not running in a pod?)");
  }
  ClusterConfig c;
  const bool v6 = host.find(':') != std::string::npos;
  c.server = "https://" + (v6 ? "[" + host + "]" : host) + ":" + port;
  auto parsed = parse_server(c);
  if (!parsed.ok()) {
    return util::make_error("in-cluster: KUBERNETES_SERVICE_HOST/PORT: " + parsed.error().message);
  }
  c = std::move(parsed).value();

  const std::string base = dir.empty() || dir.back() == '/' ? dir : dir + "/";
  auto ca = util::read_file(base + "ca.crt", kMaxConfigFileBytes);
  if (!ca.ok()) return util::make_error("in-cluster: service account CA " + ca.error().message);
  if (ca->empty())
    return util::make_error("in-cluster: service account CA " + base + "ca.crt is empty");
  c.ca_pem = std::move(ca).value();

  c.token_file = base + "token";
  auto token = util::read_file(c.token_file, kMaxTokenBytes);
  if (!token.ok()) {
    return util::make_error("in-cluster: service account token " + token.error().message);
  }
  if (trim(*token).empty()) {
    return util::make_error("in-cluster: service account token " + c.token_file + " is empty");
  }

  auto ns = util::read_file(base + "namespace", 4096);  // optional, as in client-go
  c.namespace_ = ns.ok() && !trim(*ns).empty() ? trim(*ns) : "default";
  c.description = "in-cluster";
  return c;
}

util::Result<ClusterConfig> resolve_config(const std::string& kubeconfig_flag,
                                           const std::string& in_cluster_dir) {
  if (!kubeconfig_flag.empty()) {
    auto r = load_kubeconfig(kubeconfig_flag);
    if (!r.ok()) return util::make_error("--kubeconfig: " + r.error().message);
    return r;
  }
  const std::string kubeconfig = env("KUBECONFIG");
  if (!kubeconfig.empty()) {
    auto r = load_kubeconfig(kubeconfig);
    if (!r.ok()) return util::make_error("$KUBECONFIG: " + r.error().message);
    return r;
  }
  if (!env("KUBERNETES_SERVICE_HOST").empty()) {
    auto r = in_cluster_config(in_cluster_dir);
    if (!r.ok()) {
      return util::make_error("no --kubeconfig or $KUBECONFIG; KUBERNETES_SERVICE_HOST is set, " +
                              r.error().message);
    }
    return r;
  }
  const std::string tried =
      "no --kubeconfig, $KUBECONFIG not set, not in a cluster (KUBERNETES_SERVICE_HOST not set)";
  const std::string home = env("HOME");
  if (home.empty()) return util::make_error(tried + ", and $HOME not set for ~/.kube/config");
  auto r = load_kubeconfig(home + "/.kube/config");
  if (!r.ok()) return util::make_error(tried + "; default " + r.error().message);
  return r;
}

TokenSource::TokenSource(const ClusterConfig& c, std::chrono::milliseconds recheck)
    : token_file_(c.token_file), recheck_(recheck), token_(c.token) {}

std::string TokenSource::token() {
  std::lock_guard<std::mutex> lock(mu_);
  if (token_file_.empty()) return token_;
  const auto now = std::chrono::steady_clock::now();
  if (!checked_ || now - last_check_ >= recheck_) {
    checked_ = true;
    last_check_ = now;
    refresh_locked();
  }
  return token_;
}

std::string TokenSource::last_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void TokenSource::refresh_locked() {
  const std::string keeping = " (keeping the last good token)";
  // Stat, then read: a token replaced in between is read again at the next check, as its
  // stamp differs from the one kept.
  struct stat st {};
  if (::stat(token_file_.c_str(), &st) != 0) {
    error_ = token_file_ + ": " + std::generic_category().message(errno) + keeping;
    return;
  }
  FileStamp s;
  s.dev = static_cast<std::uint64_t>(st.st_dev);
  s.ino = static_cast<std::uint64_t>(st.st_ino);
  s.size = static_cast<std::uint64_t>(st.st_size);
  s.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (have_stamp_ && s == stamp_) {
    error_.clear();
    return;
  }
  auto text = util::read_file(token_file_, kMaxTokenBytes);
  if (!text.ok()) {
    error_ = text.error().message + keeping;
    return;
  }
  std::string t = trim(*text);
  if (t.empty()) {  // e.g. caught between truncate and write; retried at the next check
    error_ = token_file_ + ": empty" + keeping;
    return;
  }
  token_ = std::move(t);
  stamp_ = s;
  have_stamp_ = true;
  error_.clear();
}

std::string redact(const std::string& authorization_value) {
  if (authorization_value.empty()) return "<empty>";
  const std::size_t sp = authorization_value.find(' ');
  if (sp != std::string::npos) {
    const std::string scheme = authorization_value.substr(0, sp);
    const std::string lower = util::lowered(scheme);
    if (lower == "bearer" || lower == "basic") {  // only a known scheme word is shown
      return scheme + " <redacted, " + std::to_string(authorization_value.size() - sp - 1) +
             " bytes>";
    }
  }
  return "<redacted, " + std::to_string(authorization_value.size()) + " bytes>";
}

}  // namespace tollgate::k8s
