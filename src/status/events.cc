#include "tollgate/status/events.h"

#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "tollgate/util/log.h"
#include "tollgate/util/time.h"

namespace tollgate::status {
namespace {

using nlohmann::json;

std::string event_name(const std::string& object_name, std::chrono::system_clock::time_point t) {
  // As client-go names them: the object's name, then the time in hex nanoseconds.
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch());
  char hex[32];
  std::snprintf(hex, sizeof hex, "%llx", static_cast<unsigned long long>(ns.count()));
  return object_name + "." + hex;
}

}  // namespace

bool EventRecorder::take_token(const std::string& uid, std::chrono::steady_clock::time_point mono) {
  if (buckets_.size() > options_.max_remembered) {
    // Forget the objects whose bucket has refilled: they would start full anyway.
    std::erase_if(buckets_, [&](const auto& kv) {
      const double refilled =
          kv.second.tokens + std::chrono::duration<double>(mono - kv.second.at) / options_.refill;
      return refilled >= options_.burst;
    });
  }
  auto [it, added] = buckets_.try_emplace(uid, Bucket{options_.burst, mono});
  Bucket& b = it->second;
  if (!added) {
    b.tokens = std::min(options_.burst,
                        b.tokens + std::chrono::duration<double>(mono - b.at) / options_.refill);
    b.at = mono;
  }
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

void EventRecorder::remember(const std::string& key, std::string name) {
  if (auto it = known_.find(key); it != known_.end()) {
    order_.erase(it->second.order);
    known_.erase(it);
  }
  while (known_.size() >= options_.max_remembered && !order_.empty()) {
    known_.erase(order_.front());
    order_.pop_front();
  }
  order_.push_back(key);
  known_.emplace(key, Known{std::move(name), 1, std::prev(order_.end())});
}

EventRecorder::Outcome EventRecorder::create(const std::string& key, const InvolvedObject& object,
                                             std::string_view type, std::string_view reason,
                                             std::string_view message,
                                             std::chrono::system_clock::time_point now) {
  const std::string stamp = util::rfc3339_seconds(now);
  const std::string name = event_name(object.name, now);
  const json event = {
      {"apiVersion", "v1"},
      {"kind", "Event"},
      {"metadata", {{"name", name}, {"namespace", object.namespace_}}},
      {"involvedObject",
       {{"apiVersion", object.api_version},
        {"kind", object.kind},
        {"namespace", object.namespace_},
        {"name", object.name},
        {"uid", object.uid}}},
      {"type", type},
      {"reason", reason},
      {"message", message},
      {"count", 1},
      {"firstTimestamp", stamp},
      {"lastTimestamp", stamp},
      {"source", {{"component", options_.component}, {"host", options_.instance}}},
      {"reportingComponent", options_.component},
      {"reportingInstance", options_.instance},
  };
  k8s::Call call;
  call.method = "POST";
  call.target = "/api/v1/namespaces/" + object.namespace_ + "/events";
  call.body = event.dump();
  auto r = transport_.send(call);
  if (r.ok() && (r->status == 201 || r->status == 200)) {
    remember(key, name);
    ++stats_.created;
    return Outcome::kCreated;
  }
  ++stats_.failed;
  util::log_warn("an Event could not be created",
                 {{"policy", object.namespace_ + "/" + object.name},
                  {"reason", std::string(reason)},
                  {"error", k8s::describe(r)}});
  return Outcome::kFailed;
}

EventRecorder::Outcome EventRecorder::record(const InvolvedObject& object, std::string_view type,
                                             std::string_view reason, std::string_view message,
                                             std::chrono::system_clock::time_point now,
                                             std::chrono::steady_clock::time_point mono) {
  if (!take_token(object.uid, mono)) {
    ++stats_.limited;
    return Outcome::kLimited;
  }
  std::string key = object.uid;
  for (std::string_view part : {type, reason, message}) {
    key += '\n';
    key += part;
  }
  auto it = known_.find(key);
  if (it == known_.end()) return create(key, object, type, reason, message, now);
  Known& k = it->second;
  k8s::Call call;
  call.method = "PATCH";
  call.target = "/api/v1/namespaces/" + object.namespace_ + "/events/" + k.name;
  call.content_type = "application/merge-patch+json";
  call.body = json{{"count", k.count + 1}, {"lastTimestamp", util::rfc3339_seconds(now)}}.dump();
  auto r = transport_.send(call);
  if (r.ok() && r->status == 200) {
    ++k.count;
    order_.splice(order_.end(), order_, k.order);
    ++stats_.patched;
    return Outcome::kPatched;
  }
  if (r.ok() && r->status == 404) return create(key, object, type, reason, message, now);
  ++stats_.failed;
  util::log_warn("an Event's count could not be bumped",
                 {{"event", k.name}, {"error", k8s::describe(r)}});
  return Outcome::kFailed;
}

}  // namespace tollgate::status
