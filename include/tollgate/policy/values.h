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

// An IPv4 or IPv6 address. The family is part of the value, as in Envoy's
// Network::Address::Ip: 10.1.2.3 and ::ffff:10.1.2.3 are different addresses, and an address is
// never in a range of the other family
// (docs/semantics.md#ip-blocks-ipblocks-remoteipblocks-and-destinationip).
struct IpAddress {
  // raw[0] is the family (4 or 6); an IPv4 address fills raw[1..4] and leaves the rest zero.
  std::array<std::uint8_t, 17> raw{};
  bool v6() const { return raw[0] == 6; }
  int bits() const { return v6() ? 128 : 32; }
  // The 17 raw bytes: the key of exact-address sets, distinct across families.
  std::string_view key() const { return {reinterpret_cast<const char*>(raw.data()), raw.size()}; }
  bool operator==(const IpAddress&) const = default;
};

// An address range of one family; `prefix` counts that family's bits (0-32 or 0-128).
struct Cidr {
  IpAddress addr;
  int prefix = 0;
  // Envoy's CidrRange::isInRange: false for an address of the other family.
  bool contains(const IpAddress& ip) const;
  std::string to_string() const;  // canonical: "10.0.0.0/8", "2001:db8::/32", "::ffff:a00:0/104"
};

std::optional<IpAddress> parse_ip(std::string_view text);
// "10.0.0.0/8", "10.1.2.3" (a /32), "2001:db8::/32"; host bits are cleared.
util::Result<Cidr> parse_cidr(std::string_view text);
util::Result<int> parse_port(std::string_view text);

bool contains_path_template(std::string_view path);
// Errors name what is wrong with a template such as "/a/{**}/b/{*}".
util::Status validate_path_template(std::string_view path);

// A parsed `when` key: the attribute and its argument (header name, claim path...).
struct WhenKey {
  Attr attr{};
  std::string arg;
  // A known key whose [name] is malformed ("request.headers[]"): Istio fails to translate
  // each of its values rather than rejecting the key, so this says why, and `arg` is empty.
  std::optional<std::string> malformed;
};
util::Result<WhenKey> parse_when_key(std::string_view key);

// Translation of one value of an attribute: an error means Istio could not generate it
// (e.g. "abc" is not a port).
util::Status check_value(Attr attr, std::string_view value);

// Go's strconv.ParseBool.
std::optional<bool> parse_go_bool(std::string_view text);

}  // namespace tollgate::policy
