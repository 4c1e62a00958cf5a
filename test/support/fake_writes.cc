// The fake API server's object store: create, update, patch and delete as kube-apiserver applies
// them (preconditions, the status subresource, generation, no-op writes), and the Status bodies
// it answers with. Every function here runs under the server's lock.
#include <chrono>
#include <ctime>
#include <random>
#include <string>
#include <utility>

#include "test/support/fake_apiserver_internal.h"
#include "tollgate/util/strings.h"

namespace tollgate::testing::fake {
namespace {

std::string str(const json& object, const char* key) {
  if (!object.is_object()) return "";
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

const json& meta_of(const json& object) {
  static const json kEmpty = json::object();
  if (!object.is_object()) return kEmpty;
  auto it = object.find("metadata");
  return it != object.end() && it->is_object() ? *it : kEmpty;
}

WriteResult fail(int code, const std::string& reason, const std::string& message,
                 const std::string& name = "") {
  return {code, status_body(code, reason, message), name};
}

WriteResult conflict(const Collection& c, const std::string& name, const std::string& why) {
  return {409,
          object_status(c, 409, "Conflict", name,
                        "Operation cannot be fulfilled on " + qualified_resource(c) + " \"" + name +
                            "\": " + why),
          name};
}

std::string now_rfc3339() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// As the apiserver's names.SimpleNameGenerator: 5 characters without vowels or look-alikes.
std::string random_suffix() {
  static constexpr char kAlphabet[] = "bcdfghjklmnpqrstvwxz2456789";
  thread_local std::mt19937 rng{std::random_device{}()};
  std::uniform_int_distribution<std::size_t> pick(0, sizeof kAlphabet - 2);
  std::string out;
  for (int i = 0; i < 5; ++i) out += kAlphabet[pick(rng)];
  return out;
}

std::string media_type(const std::string& content_type) {
  std::string t = util::lowered(util::trim(content_type.substr(0, content_type.find(';'))));
  return t;
}

// The body of a POST or PUT: a JSON object, or the error that answers it.
std::optional<json> object_body(const WriteOp& op, WriteResult& error) {
  const std::string type = media_type(op.content_type);
  if (!type.empty() && type != "application/json") {
    error = fail(415, "UnsupportedMediaType",
                 "the body of the request was in an unknown format - accepted media types "
                 "include: application/json (the fake apiserver reads JSON only)");
    return std::nullopt;
  }
  json body = json::parse(op.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    error = fail(400, "BadRequest",
                 "the object provided is unrecognized (must be of type map): " +
                     std::string(body.is_discarded() ? "invalid JSON" : body.type_name()));
    return std::nullopt;
  }
  return body;
}

// kind and apiVersion, when the object names them, must be the collection's.
std::optional<WriteResult> check_type(const Collection& c, const json& object) {
  const std::string api_version = str(object, "apiVersion"), kind = str(object, "kind");
  if (!api_version.empty() && api_version != c.api_version) {
    return fail(400, "BadRequest",
                "the API version in the data (" + api_version +
                    ") does not match the expected API version (" + c.api_version + ")");
  }
  if (!kind.empty() && kind != c.kind) {
    return fail(
        400, "BadRequest",
        "the kind in the data (" + kind + ") does not match the expected kind (" + c.kind + ")");
  }
  return std::nullopt;
}

// The namespace in the object must be the path's (a namespaced collection fills it in); a
// cluster-scoped object has none.
std::optional<WriteResult> check_namespace(const Collection& c, json& meta, const WriteOp& op) {
  if (!c.namespaced) {
    meta.erase("namespace");
    return std::nullopt;
  }
  const std::string ns = str(meta, "namespace");
  if (!ns.empty() && ns != op.ns) {
    return fail(400, "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the "
                "request");
  }
  meta["namespace"] = op.ns;
  return std::nullopt;
}

// Everything that is not metadata or status: what a generation counts.
json spec_of(const json& object) {
  json out = object;
  for (const char* k : {"metadata", "status", "kind", "apiVersion"}) out.erase(k);
  return out;
}

// Strategic merge patch directives ($patch, $setElementOrder/..., $retainKeys, ...) are dropped:
// the rest is applied as a JSON merge patch.
void strip_directives(json& j) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end();) {
      if (!it.key().empty() && it.key()[0] == '$') {
        it = j.erase(it);
      } else {
        strip_directives(*it);
        ++it;
      }
    }
  } else if (j.is_array()) {
    for (json& e : j) strip_directives(e);
  }
}

// The stored object with a PATCH applied (kind and apiVersion included, as the apiserver
// patches the versioned object), or the error that answers it.
std::optional<json> patched(const Collection& c, const json& stored, const WriteOp& op,
                            WriteResult& error) {
  const std::string type = media_type(op.content_type);
  json doc = stored;
  doc["kind"] = c.kind;
  doc["apiVersion"] = c.api_version;
  const json patch = json::parse(op.body, nullptr, false);
  if (type == "application/merge-patch+json" || type == "application/strategic-merge-patch+json") {
    if (patch.is_discarded() || !patch.is_object()) {
      error = fail(400, "BadRequest", "error decoding patch: the patch is not a JSON object");
      return std::nullopt;
    }
    json p = patch;
    if (type == "application/strategic-merge-patch+json") strip_directives(p);
    doc.merge_patch(p);
    return doc;
  }
  if (type == "application/json-patch+json") {
    if (patch.is_discarded() || !patch.is_array()) {
      error = fail(400, "BadRequest", "error decoding patch: the patch is not a JSON array");
      return std::nullopt;
    }
    try {
      return doc.patch(patch);
    } catch (const json::parse_error& e) {
      error = fail(400, "BadRequest", std::string("error decoding patch: ") + e.what());
    } catch (const json::exception& e) {
      error = fail(422, "Invalid", e.what());
    }
    return std::nullopt;
  }
  error = fail(415, "UnsupportedMediaType",
               "the body of the request was in an unknown format - accepted media types "
               "include: application/json-patch+json, application/merge-patch+json, "
               "application/strategic-merge-patch+json (the fake apiserver does not implement "
               "server-side apply)");
  return std::nullopt;
}

WriteResult create(Collection& c, std::uint64_t& rv, const WriteOp& op) {
  WriteResult error;
  auto body = object_body(op, error);
  if (!body) return error;
  json object = std::move(*body);
  if (auto e = check_type(c, object)) return *e;
  json& meta = object["metadata"];
  if (!meta.is_object()) meta = json::object();
  if (auto e = check_namespace(c, meta, op)) return *e;
  std::string name = str(meta, "name");
  const std::string generate = str(meta, "generateName");
  if (name.empty() && generate.empty()) {
    return {422,
            object_status(c, 422, "Invalid", "",
                          c.kind + " \"\" is invalid: metadata.name: Required value: name or "
                                   "generateName is required"),
            ""};
  }
  const std::string ns = c.namespaced ? op.ns : "";
  if (name.empty()) {
    do {
      name = generate + random_suffix();
    } while (c.items.count(Key{ns, name}) != 0);
    meta["name"] = name;
  }
  if (c.items.count(Key{ns, name}) != 0) {
    return {409,
            object_status(c, 409, "AlreadyExists", name,
                          qualified_resource(c) + " \"" + name + "\" already exists"),
            name};
  }
  if (!str(meta, "resourceVersion").empty()) {
    return fail(400, "BadRequest", "resourceVersion should not be set on objects to be created",
                name);
  }
  object.erase("kind");
  object.erase("apiVersion");
  meta["uid"] = "fake-uid-" + c.kind + "-" + std::to_string(c.next_uid++);
  meta["creationTimestamp"] = now_rfc3339();
  if (c.status_subresource) {
    object.erase("status");  // a create sets no status, as for a custom resource
    meta["generation"] = 1;
  }
  meta["resourceVersion"] = std::to_string(++rv);
  auto text = std::make_shared<const std::string>(object.dump());
  record(c, rv, "ADDED", Key{ns, name}, text, nullptr);
  return {201, json::parse(with_kind(c, *text)), name};
}

WriteResult update(Collection& c, std::uint64_t& rv, const Key& key, const Text& old_text,
                   const json& stored, json incoming, const WriteOp& op) {
  if (auto e = check_type(c, incoming)) return *e;
  json& meta = incoming["metadata"];
  if (!meta.is_object()) meta = json::object();
  if (str(meta, "name") != op.name) {
    return fail(400, "BadRequest",
                "the name of the object (" + str(meta, "name") +
                    ") does not match the name on the URL (" + op.name + ")",
                op.name);
  }
  if (auto e = check_namespace(c, meta, op)) return *e;
  const json& stored_meta = meta_of(stored);
  const std::string stored_rv = str(stored_meta, "resourceVersion");
  if (const std::string want = str(meta, "resourceVersion"); !want.empty() && want != stored_rv) {
    return conflict(c, op.name,
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again");
  }
  json result;
  if (op.subresource == "status") {
    // Only the status changes: spec and metadata are the stored ones.
    result = stored;
    if (incoming.contains("status")) {
      result["status"] = incoming["status"];
    } else {
      result.erase("status");
    }
  } else {
    result = std::move(incoming);
    result.erase("kind");
    result.erase("apiVersion");
    if (c.status_subresource) {
      if (stored.contains("status")) {
        result["status"] = stored["status"];
      } else {
        result.erase("status");
      }
    }
    // Set by the server only: uid, creationTimestamp, generation, resourceVersion.
    json& m = result["metadata"];
    for (const char* k : {"uid", "creationTimestamp", "generation", "resourceVersion"}) {
      if (stored_meta.contains(k)) {
        m[k] = stored_meta[k];
      } else {
        m.erase(k);
      }
    }
    if (c.status_subresource) manage_generation(&stored, result);
  }
  if (result == stored) return {200, json::parse(with_kind(c, *old_text)), op.name};
  result["metadata"]["resourceVersion"] = std::to_string(++rv);
  auto text = std::make_shared<const std::string>(result.dump());
  record(c, rv, "MODIFIED", key, text, old_text);
  return {200, json::parse(with_kind(c, *text)), op.name};
}

WriteResult erase(Collection& c, std::uint64_t& rv, const Key& key, const Text& old_text,
                  json stored, const WriteOp& op) {
  json options = json::object();
  if (!util::trim(op.body).empty()) {
    options = json::parse(op.body, nullptr, false);
    if (options.is_discarded() || !options.is_object()) {
      return fail(400, "BadRequest", "the DeleteOptions body is not a JSON object", op.name);
    }
  }
  const json& meta = meta_of(stored);
  if (auto it = options.find("preconditions"); it != options.end() && it->is_object()) {
    const std::string uid = str(*it, "uid"), version = str(*it, "resourceVersion");
    if (!uid.empty() && uid != str(meta, "uid")) {
      return conflict(c, op.name,
                      "Precondition failed: UID in precondition: " + uid +
                          ", UID in object meta: " + str(meta, "uid"));
    }
    if (!version.empty() && version != str(meta, "resourceVersion")) {
      return conflict(c, op.name,
                      "Precondition failed: ResourceVersion in precondition: " + version +
                          ", ResourceVersion in object meta: " + str(meta, "resourceVersion"));
    }
  }
  stored["metadata"]["resourceVersion"] = std::to_string(++rv);
  auto text = std::make_shared<const std::string>(stored.dump());
  record(c, rv, "DELETED", key, text, old_text);
  return {200, json::parse(with_kind(c, *text)), op.name};
}

}  // namespace

json status_body(int code, const std::string& reason, const std::string& message) {
  json status = {{"kind", "Status"},    {"apiVersion", "v1"}, {"metadata", json::object()},
                 {"status", "Failure"}, {"message", message}, {"reason", reason},
                 {"code", code}};
  if (code == 429 || code == 503) status["details"] = {{"retryAfterSeconds", 1}};
  return status;
}

std::string qualified_resource(const Collection& c) {
  return c.group.empty() ? c.resource : c.resource + "." + c.group;
}

json object_status(const Collection& c, int code, const std::string& reason,
                   const std::string& name, const std::string& message) {
  json status = status_body(code, reason, message);
  // An Invalid names the kind, the others the resource.
  json details = {{"name", name}, {"kind", code == 422 ? c.kind : c.resource}};
  if (!c.group.empty()) details["group"] = c.group;
  status["details"] = details;
  return status;
}

json not_found(const Collection& c, const std::string& name) {
  return object_status(c, 404, "NotFound", name,
                       qualified_resource(c) + " \"" + name + "\" not found");
}

std::string with_kind(const Collection& c, const std::string& text) {
  std::string out = c.kind_prefix;
  if (text.size() > 2) {
    out += ',';
    out.append(text, 1);
  } else {
    out += '}';
  }
  return out;
}

void record(Collection& c, std::uint64_t rv, const char* type, const Key& key, Text text,
            Text prev) {
  if (std::string_view(type) == "DELETED") {
    c.items.erase(key);
  } else {
    c.items[key] = text;
  }
  c.history.push_back(Event{rv, type, key, std::move(text), std::move(prev)});
}

void manage_generation(const json* stored, json& object) {
  json& meta = object["metadata"];
  if (stored == nullptr) {
    if (!meta.contains("generation")) meta["generation"] = 1;
    return;
  }
  const json& stored_meta = meta_of(*stored);
  const auto old = stored_meta.find("generation");
  const bool had = old != stored_meta.end() && old->is_number_integer();
  // An explicit generation other than the stored one is the test's to set.
  if (meta.contains("generation") && (!had || meta["generation"] != *old)) return;
  const std::int64_t base = had ? old->get<std::int64_t>() : 0;
  if (spec_of(*stored) != spec_of(object)) {
    meta["generation"] = base + 1;
  } else if (had) {
    meta["generation"] = base;
  } else {
    meta.erase("generation");
  }
}

WriteResult apply_write(Collection& c, std::uint64_t& rv, const WriteOp& op) {
  if (op.method == "POST") return create(c, rv, op);
  const Key key{c.namespaced ? op.ns : "", op.name};
  auto it = c.items.find(key);
  if (it == c.items.end()) return {404, not_found(c, op.name), op.name};
  const Text old_text = it->second;
  json stored = json::parse(*old_text);
  if (op.method == "DELETE") return erase(c, rv, key, old_text, std::move(stored), op);
  WriteResult error;
  std::optional<json> incoming;
  if (op.method == "PUT") {
    incoming = object_body(op, error);
  } else if (op.method == "PATCH") {
    incoming = patched(c, stored, op, error);
  } else {
    return fail(405, "MethodNotAllowed", "the server does not allow this method", op.name);
  }
  if (!incoming) {
    error.name = op.name;
    return error;
  }
  return update(c, rv, key, old_text, stored, std::move(*incoming), op);
}

}  // namespace tollgate::testing::fake
