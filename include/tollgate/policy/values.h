// Value translation shared by validation and compilation: ports, IPs/CIDRs, path templates,
// `when` keys. Pure functions; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "tollgate/policy/model.h"
#include "tollgate/util/result.h"

namespace tollgate::policy {

// An IPv4 (mapped into ::ffff:0:0/96) or IPv6 address and prefix length over 128 bits.
struct Cidr {
  std::array<std::uint8_t, 16> addr{};
  int prefix = 128;
  bool contains(const std::array<std::uint8_t, 16>& ip) const;
  std::string to_string() const;
};

std::optional<std::array<std::uint8_t, 16>> parse_ip(std::string_view text);
// "10.0.0.0/8", "10.1.2.3" (a /32), "2001:db8::/32"; host bits are cleared.
util::Result<Cidr> parse_cidr(std::string_view text);
util::Result<int> parse_port(std::string_view text);

bool contains_path_template(std::string_view path);
// Errors name what is wrong with a template such as "/a/{**}/b/{*}".
util::Result<bool> validate_path_template(std::string_view path);

// A parsed `when` key: the attribute and its argument (header name, claim path...).
struct WhenKey {
  Attr attr{};
  std::string arg;
};
util::Result<WhenKey> parse_when_key(std::string_view key);

// Translation of one value of an attribute: an error means Istio could not generate it
// (e.g. "abc" is not a port). `http` is false on a TCP chain, where HTTP-only attributes fail.
util::Result<bool> check_value(Attr attr, std::string_view value);

// Go's strconv.ParseBool.
std::optional<bool> parse_go_bool(std::string_view text);

}  // namespace tollgate::policy
