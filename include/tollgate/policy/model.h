// The AuthorizationPolicy model: what a policy says, as parsed, with the field path of every
// value so that validation, compilation and lint can all point at the source. Plain values;
// no threads, no I/O.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::policy {

enum class Action : std::uint8_t { kAllow, kDeny, kAudit, kCustom, kUnknown };
const char* action_name(Action a);
Action parse_action(std::string_view name);  // kUnknown unless ALLOW, DENY, AUDIT, CUSTOM

// Every attribute a rule can test. One enum for Source fields, Operation fields and `when`
// keys: `principals` and `when: source.principal` are the same attribute.
enum class Attr : std::uint8_t {
  kSourcePrincipal,       // principals, source.principal
  kSourceNamespace,       // namespaces, source.namespace
  kSourceServiceAccount,  // serviceAccounts, source.serviceAccount
  kSourceTrustDomain,     // trustDomains, source.trustDomain
  kSourceIp,              // ipBlocks, source.ip
  kRemoteIp,              // remoteIpBlocks, remote.ip
  kRequestPrincipal,      // requestPrincipals, request.auth.principal
  kAudiences,             // request.auth.audiences
  kPresenter,             // request.auth.presenter
  kClaim,                 // request.auth.claims[a][b]...   (arg: the claim path, '\0'-separated)
  kHost,                  // hosts
  kMethod,                // methods
  kPath,                  // paths
  kPort,                  // ports, destination.port
  kHeader,                // request.headers[name]          (arg: the lower-cased header name)
  kDestinationIp,         // destination.ip
  kSni,                   // connection.sni
  kMetadata,              // experimental.envoy.filters.<f>[<k>]  (arg: "<f>\0<k>")
};
inline constexpr int kAttrCount = 18;
const char* attr_name(Attr a);  // the `when` key style name, e.g. "source.principal"
bool attr_is_http_only(Attr a);
bool attr_needs_mtls(Attr a);
bool attr_is_jwt(Attr a);
// Istio splits `when` keys into principal-side and permission-side keys.
bool attr_is_permission(Attr a);

// One tested attribute: values ORed; not_values = NOT(any); both ANDed.
struct Match {
  Attr attr{};
  std::string arg;
  std::vector<std::string> values;
  std::vector<std::string> not_values;
  // Elements that were not strings (wrong type): they can never be translated.
  int bad_values = 0;
  int bad_not_values = 0;
  // Field paths for messages, e.g. "spec.rules[0].from[1].source.principals".
  std::string values_path;
  std::string not_values_path;
};

// One `from[i].source` or `to[j].operation`: every Match must hold.
struct Clause {
  std::vector<Match> matches;
};

struct Rule {
  bool null_rule = false;    // `- null`: skipped by Istio
  std::vector<Clause> from;  // any; empty = any source
  std::vector<Clause> to;    // any; empty = any operation
  std::vector<Match> when;   // all
  // An unknown or removed `when` key: Istio skips the rule for every action.
  std::optional<std::string> invalid_reason;
  // A structural error (wrong type) inside the rule: the rule is compiled fail-closed.
  bool malformed = false;
};

struct Finding {
  enum class Severity : std::uint8_t { kError, kWarning, kInfo };
  Severity severity = Severity::kError;
  std::string code;    // e.g. "TG101"
  std::string object;  // "namespace/name"
  std::string path;    // "spec.rules[1].to[0].operation.ports[2]"
  std::string message;
};
const char* severity_name(Finding::Severity s);

struct TargetRef {
  std::string group, kind, name, namespace_;
};

struct Policy {
  std::string api_version;
  std::string namespace_;
  std::string name;
  Action action = Action::kAllow;
  std::string action_text;  // as written (for messages about unknown actions)
  std::string provider;     // CUSTOM provider name
  // nullopt = no selector (every workload of the namespace); an empty map selects all too.
  std::optional<std::map<std::string, std::string>> selector;
  std::vector<TargetRef> target_refs;  // targetRef and targetRefs
  bool rules_present = false;          // false: spec.rules absent or []
  std::vector<Rule> rules;
  bool dry_run = false;
  std::optional<std::string> dry_run_text;  // the annotation as written
  std::vector<Finding> findings;            // from parsing and validation
  std::string key() const { return namespace_ + "/" + name; }
  bool has_errors() const;
};

struct ExtensionProvider {
  std::string name;
  std::string type;  // "http" | "grpc"
};

enum class PathNormalization : std::uint8_t { kBase, kMergeSlashes, kDecodeAndMergeSlashes, kNone };
const char* path_normalization_name(PathNormalization n);
// BASE (or DEFAULT), MERGE_SLASHES, DECODE_AND_MERGE_SLASHES, NONE.
std::optional<PathNormalization> parse_path_normalization(std::string_view name);

struct MeshConfig {
  std::string root_namespace = "istio-system";
  std::string trust_domain = "cluster.local";
  std::vector<std::string> trust_domain_aliases;
  std::vector<ExtensionProvider> extension_providers;
  bool enable_multiple_custom_providers = false;
  PathNormalization path_normalization = PathNormalization::kBase;
};

struct ContainerPort {
  int number = 0;
  std::string name;
  bool operator==(const ContainerPort&) const = default;
};

// What the controller knows of a workload (a pod, or a workload described directly).
struct Workload {
  std::string namespace_;
  std::string name;  // pod name; may be empty for a described workload
  std::map<std::string, std::string> labels;
  std::string service_account = "default";
  std::vector<ContainerPort> ports;
};

// A Service, for the protocol Istio selects per port (name prefix or appProtocol).
struct ServicePort {
  int port = 0;
  std::string target_port;  // a number, a container port name, or empty (= port)
  std::string name;
  std::string app_protocol;
};
struct Service {
  std::string namespace_;
  std::string name;
  std::map<std::string, std::string> selector;
  std::vector<ServicePort> ports;
};

}  // namespace tollgate::policy
