#include "tollgate/policy/values.h"
#include "tollgate/util/strings.h"

#include <arpa/inet.h>

#include <cctype>
#include <cstring>

namespace tollgate::policy {

const char* action_name(Action a) {
  switch (a) {
    case Action::kAllow:
      return "ALLOW";
    case Action::kDeny:
      return "DENY";
    case Action::kAudit:
      return "AUDIT";
    case Action::kCustom:
      return "CUSTOM";
    case Action::kUnknown:
      break;
  }
  return "UNKNOWN";
}

Action parse_action(std::string_view name) {
  for (Action a : {Action::kAllow, Action::kDeny, Action::kAudit, Action::kCustom}) {
    if (name == action_name(a)) return a;
  }
  return Action::kUnknown;
}

const char* path_normalization_name(PathNormalization n) {
  switch (n) {
    case PathNormalization::kBase:
      return "BASE";
    case PathNormalization::kMergeSlashes:
      return "MERGE_SLASHES";
    case PathNormalization::kDecodeAndMergeSlashes:
      return "DECODE_AND_MERGE_SLASHES";
    case PathNormalization::kNone:
      break;
  }
  return "NONE";
}

std::optional<PathNormalization> parse_path_normalization(std::string_view name) {
  if (name == "DEFAULT") return PathNormalization::kBase;
  for (auto n : {PathNormalization::kBase, PathNormalization::kMergeSlashes,
                 PathNormalization::kDecodeAndMergeSlashes, PathNormalization::kNone}) {
    if (name == path_normalization_name(n)) return n;
  }
  return std::nullopt;
}

const char* severity_name(Finding::Severity s) {
  switch (s) {
    case Finding::Severity::kError:
      return "error";
    case Finding::Severity::kWarning:
      return "warning";
    case Finding::Severity::kInfo:
      break;
  }
  return "info";
}

const char* attr_name(Attr a) {
  switch (a) {
    case Attr::kSourcePrincipal:
      return "source.principal";
    case Attr::kSourceNamespace:
      return "source.namespace";
    case Attr::kSourceServiceAccount:
      return "source.serviceAccount";
    case Attr::kSourceTrustDomain:
      return "source.trustDomain";
    case Attr::kSourceIp:
      return "source.ip";
    case Attr::kRemoteIp:
      return "remote.ip";
    case Attr::kRequestPrincipal:
      return "request.auth.principal";
    case Attr::kAudiences:
      return "request.auth.audiences";
    case Attr::kPresenter:
      return "request.auth.presenter";
    case Attr::kClaim:
      return "request.auth.claims";
    case Attr::kHost:
      return "request.host";
    case Attr::kMethod:
      return "request.method";
    case Attr::kPath:
      return "request.path";
    case Attr::kPort:
      return "destination.port";
    case Attr::kHeader:
      return "request.headers";
    case Attr::kDestinationIp:
      return "destination.ip";
    case Attr::kSni:
      return "connection.sni";
    case Attr::kMetadata:
      return "experimental.envoy.filters";
  }
  return "?";
}

bool attr_is_http_only(Attr a) {
  switch (a) {
    case Attr::kRequestPrincipal:
    case Attr::kAudiences:
    case Attr::kPresenter:
    case Attr::kClaim:
    case Attr::kHost:
    case Attr::kMethod:
    case Attr::kPath:
    case Attr::kHeader:
      return true;
    default:
      return false;
  }
}

bool attr_needs_mtls(Attr a) {
  return a == Attr::kSourcePrincipal || a == Attr::kSourceNamespace ||
         a == Attr::kSourceServiceAccount || a == Attr::kSourceTrustDomain;
}

bool attr_is_jwt(Attr a) {
  return a == Attr::kRequestPrincipal || a == Attr::kAudiences || a == Attr::kPresenter ||
         a == Attr::kClaim;
}

bool attr_is_permission(Attr a) {
  return a == Attr::kHost || a == Attr::kMethod || a == Attr::kPath || a == Attr::kPort ||
         a == Attr::kDestinationIp || a == Attr::kSni || a == Attr::kMetadata;
}

std::optional<IpAddress> parse_ip(std::string_view text) {
  if (text.empty() || text.size() > 64) return std::nullopt;
  char buf[65];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  IpAddress out;
  in_addr v4{};
  if (inet_pton(AF_INET, buf, &v4) == 1) {
    out.raw[0] = 4;
    std::memcpy(&out.raw[1], &v4, 4);
    return out;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, buf, &v6) == 1) {
    out.raw[0] = 6;
    std::memcpy(&out.raw[1], &v6, 16);
    return out;
  }
  return std::nullopt;
}

bool Cidr::contains(const IpAddress& ip) const {
  if (ip.raw[0] != addr.raw[0]) return false;
  int bits = prefix;
  for (std::size_t i = 1; i < ip.raw.size() && bits > 0; ++i, bits -= 8) {
    const std::uint8_t mask = bits >= 8 ? 0xff : static_cast<std::uint8_t>(0xff << (8 - bits));
    if ((ip.raw[i] & mask) != addr.raw[i]) return false;
  }
  return true;
}

std::string Cidr::to_string() const {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(addr.v6() ? AF_INET6 : AF_INET, &addr.raw[1], buf, sizeof buf);
  return std::string(buf) + "/" + std::to_string(prefix);
}

util::Result<Cidr> parse_cidr(std::string_view text) {
  std::string_view ip = text;
  int prefix = -1;
  if (auto slash = text.find('/'); slash != std::string_view::npos) {
    ip = text.substr(0, slash);
    std::string_view p = text.substr(slash + 1);
    if (p.empty() || p.size() > 3) return util::make_error("is not an IP address or CIDR");
    prefix = 0;
    for (char c : p) {
      if (c < '0' || c > '9') return util::make_error("is not an IP address or CIDR");
      prefix = prefix * 10 + (c - '0');
    }
  }
  auto addr = parse_ip(ip);
  if (!addr) return util::make_error("is not an IP address or CIDR");
  if (prefix > addr->bits()) {
    return util::make_error(addr->v6() ? "has an IPv6 prefix length over 128"
                                       : "has an IPv4 prefix length over 32");
  }
  Cidr c;
  c.addr = *addr;
  c.prefix = prefix < 0 ? addr->bits() : prefix;
  int bits = c.prefix;
  for (std::size_t i = 1; i < c.addr.raw.size(); ++i) {  // host bits ignored, as in CidrRange
    if (bits >= 8) {
      bits -= 8;
    } else {
      c.addr.raw[i] &= static_cast<std::uint8_t>(bits == 0 ? 0 : 0xff << (8 - bits));
      bits = 0;
    }
  }
  return c;
}

util::Result<int> parse_port(std::string_view text) {
  if (text.empty() || text.size() > 5) return util::make_error("is not a port");
  int v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return util::make_error("is not a port");
    v = v * 10 + (c - '0');
  }
  if (v > 65535) return util::make_error("is not a port (0-65535)");
  return v;
}

bool contains_path_template(std::string_view path) {
  return path.find("{*}") != std::string_view::npos || path.find("{**}") != std::string_view::npos;
}

util::Status validate_path_template(std::string_view path) {
  if (path.empty() || path[0] != '/') return util::make_error("path template must start with /");
  bool seen_double = false;
  std::size_t pos = 1;
  while (pos <= path.size()) {
    std::size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    std::string_view seg = path.substr(pos, end - pos);
    if (seg == "{*}" || seg == "{**}") {
      if (seen_double) {
        return util::make_error("path template: {**} must be the last operator");
      }
      if (seg == "{**}") seen_double = true;
    } else if (seg.find_first_of("{}*") != std::string_view::npos) {
      return util::make_error(
          "path template: '*', '{' and '}' are only allowed as a whole {*} or {**} segment");
    }
    pos = end + 1;
  }
  return util::ok();
}

namespace {

// "[a][b]" -> {"a","b"}; error when malformed.
util::Result<std::vector<std::string>> bracket_names(std::string_view s) {
  std::vector<std::string> out;
  if (s.size() < 3 || s.front() != '[' || s.back() != ']') {
    return util::make_error("has a malformed [name]");
  }
  std::size_t pos = 0;
  while (pos < s.size()) {
    if (s[pos] != '[') return util::make_error("has a malformed [name]");
    std::size_t close = s.find(']', pos);
    if (close == std::string_view::npos || close == pos + 1) {
      return util::make_error("has a malformed [name]");
    }
    std::string_view name = s.substr(pos + 1, close - pos - 1);
    if (name.find('[') != std::string_view::npos) return util::make_error("has a malformed [name]");
    out.emplace_back(name);
    pos = close + 1;
  }
  return out;
}

}  // namespace

util::Result<WhenKey> parse_when_key(std::string_view key) {
  struct Plain {
    const char* key;
    Attr attr;
  };
  static constexpr Plain kPlain[] = {
      {"source.ip", Attr::kSourceIp},
      {"remote.ip", Attr::kRemoteIp},
      {"source.namespace", Attr::kSourceNamespace},
      {"source.principal", Attr::kSourcePrincipal},
      {"source.serviceAccount", Attr::kSourceServiceAccount},
      {"source.trustDomain", Attr::kSourceTrustDomain},
      {"request.auth.principal", Attr::kRequestPrincipal},
      {"request.auth.audiences", Attr::kAudiences},
      {"request.auth.presenter", Attr::kPresenter},
      {"destination.ip", Attr::kDestinationIp},
      {"destination.port", Attr::kPort},
      {"connection.sni", Attr::kSni},
  };
  for (const Plain& p : kPlain) {
    if (key == p.key) return WhenKey{p.attr, "", std::nullopt};
  }
  constexpr std::string_view kHeaders = "request.headers";
  constexpr std::string_view kClaims = "request.auth.claims";
  constexpr std::string_view kExperimental = "experimental.envoy.filters.";
  // A known prefix with a malformed bracket is a value-translation failure, not an unknown
  // key (Istio generates an error per value).
  if (key.substr(0, kHeaders.size()) == kHeaders && key.size() > kHeaders.size() &&
      key[kHeaders.size()] == '[') {
    auto names = bracket_names(key.substr(kHeaders.size()));
    if (!names.ok() || names->size() != 1)
      return WhenKey{Attr::kHeader, "", "has a malformed header name"};
    std::string lower = (*names)[0];
    util::to_lower(lower);
    return WhenKey{Attr::kHeader, lower, std::nullopt};
  }
  if (key.substr(0, kClaims.size()) == kClaims && key.size() > kClaims.size() &&
      key[kClaims.size()] == '[') {
    auto names = bracket_names(key.substr(kClaims.size()));
    if (!names.ok()) return WhenKey{Attr::kClaim, "", "has a malformed claim name"};
    std::string arg;
    for (std::size_t i = 0; i < names->size(); ++i) {
      if (i > 0) arg.push_back('\0');
      arg += (*names)[i];
    }
    return WhenKey{Attr::kClaim, arg, std::nullopt};
  }
  if (key.substr(0, kExperimental.size()) == kExperimental) {
    std::string_view rest = key.substr(std::string_view("experimental.").size());
    std::size_t open = rest.find('[');
    if (open == std::string_view::npos || open == 0 || rest.back() != ']' ||
        open + 2 >= rest.size()) {
      return WhenKey{Attr::kMetadata, "", "has a malformed [key]"};
    }
    std::string arg(rest.substr(0, open));
    arg.push_back('\0');
    arg += rest.substr(open + 1, rest.size() - open - 2);
    return WhenKey{Attr::kMetadata, arg, std::nullopt};
  }
  if (key == "destination.labels" || key == "destination.name" || key == "destination.namespace" ||
      key == "destination.user") {
    return util::make_error("is no longer supported (removed from Istio)");
  }
  return util::make_error("is not a supported condition key");
}

util::Status check_value(Attr attr, std::string_view value) {
  switch (attr) {
    case Attr::kPort: {
      auto r = parse_port(value);
      if (!r.ok()) return r.error();
      return util::ok();
    }
    case Attr::kSourceIp:
    case Attr::kRemoteIp:
    case Attr::kDestinationIp: {
      auto r = parse_cidr(value);
      if (!r.ok()) return r.error();
      return util::ok();
    }
    case Attr::kPath:
      if (contains_path_template(value)) return validate_path_template(value);
      return util::ok();
    case Attr::kSourceServiceAccount: {
      if (value.find('*') != std::string_view::npos) {
        return util::make_error("is not a service account: wildcards are not supported");
      }
      auto slash = value.find('/');
      if (value.empty() || slash == 0 || slash + 1 == value.size() ||
          (slash != std::string_view::npos &&
           value.find('/', slash + 1) != std::string_view::npos)) {
        return util::make_error("is not a service account (\"name\" or \"namespace/name\")");
      }
      return util::ok();
    }
    default:
      return util::ok();
  }
}

std::optional<bool> parse_go_bool(std::string_view t) {
  if (t == "1" || t == "t" || t == "T" || t == "true" || t == "True" || t == "TRUE") return true;
  if (t == "0" || t == "f" || t == "F" || t == "false" || t == "False" || t == "FALSE") {
    return false;
  }
  return std::nullopt;
}

}  // namespace tollgate::policy
