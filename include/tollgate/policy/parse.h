// Parsing: Kubernetes documents (JSON, YAML multi-document, kind: List) into JSON objects,
// AuthorizationPolicy objects into the model, and mesh settings. Pure functions; thread-safe.
// Bad input never throws out of here: it becomes a Finding (policy) or an Error (documents).
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "tollgate/policy/model.h"
#include "tollgate/util/result.h"

namespace tollgate::policy {

// One Kubernetes object read from a file, with where it came from.
struct Document {
  nlohmann::json object;
  std::string origin;  // "file.yaml#2" (document index, 1-based)
};

// One Kubernetes object as the reader found it: its JSON text (a view of the input for JSON,
// of the converted document for YAML; valid during the call), kind and apiVersion (empty when
// absent or not strings), and where it came from.
struct ObjectText {
  std::string_view json;
  std::string kind, api_version;
  std::string origin;  // "file.yaml#2", "file.json.items[3]"
};
using ObjectFn = std::function<util::Status(const ObjectText&)>;

// Reads JSON or YAML text holding one or many documents, `kind: List` items flattened (4
// deep), and hands each object to `on_object`. JSON is validated, then scanned in place: a
// List of 100,000 objects is never built as one tree. YAML is read one document at a time.
// Empty documents are skipped; a document that is not an object is an error. Stops at the
// first error, the reader's or the callback's; `origin` names the input in errors.
util::Status for_each_object(std::string_view text, const std::string& origin,
                             const ObjectFn& on_object);

// The same, each object parsed (for small inputs).
util::Result<std::vector<Document>> parse_documents(std::string_view text,
                                                    const std::string& origin);

// Converts a YAML scalar tree to JSON the way Kubernetes' YAML decoder does.
util::Result<nlohmann::json> yaml_to_json(std::string_view text, const std::string& origin);

bool is_authorization_policy(const nlohmann::json& object);

// Parses an AuthorizationPolicy object. Never fails: problems are recorded in
// Policy::findings with field paths, and the model is built to fail closed.
Policy parse_policy(const nlohmann::json& object);

// What a policy object means, as text: its spec and its dry-run annotation. Two versions with
// the same fingerprint decide alike (labels and other metadata do not count).
std::string policy_fingerprint(const nlohmann::json& object);

// A finding as JSON: {"code", "severity", "object", "path", "message"} (lint output, the
// decision service's /v1/policies).
nlohmann::json finding_json(const Finding& f);

// Mesh settings from a JSON object (docs/api.md#mesh-settings); unknown keys are errors.
util::Result<MeshConfig> parse_mesh(const nlohmann::json& object);

// A workload described directly: {"namespace", "labels", "serviceAccount", "pod"?}.
util::Result<Workload> parse_workload(const nlohmann::json& object);

}  // namespace tollgate::policy
