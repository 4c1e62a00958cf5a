#include "tollgate/k8s/election.h"

#include <cstdio>
#include <ctime>

namespace tollgate::k8s {

using nlohmann::json;

std::string micro_time(std::chrono::system_clock::time_point t) {
  const auto us =
      std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  const auto secs = static_cast<std::time_t>(us >= 0 ? us / 1000000 : (us - 999999) / 1000000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[128];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(us - static_cast<long long>(secs) * 1000000));
  return buf;
}

util::Result<ReadLease> parse_lease(const json& lease) {
  if (!lease.is_object()) return util::make_error("lease: not an object");
  ReadLease r;
  const json meta = lease.value("metadata", json::object());
  if (!meta.is_object() || !meta.contains("resourceVersion") ||
      !meta["resourceVersion"].is_string()) {
    return util::make_error("lease: metadata.resourceVersion is missing");
  }
  r.resource_version = meta["resourceVersion"].get<std::string>();
  const json spec = lease.value("spec", json::object());
  if (!spec.is_object()) return util::make_error("lease: spec is not an object");
  auto str = [&](const char* key) -> util::Result<std::string> {
    auto it = spec.find(key);
    if (it == spec.end() || it->is_null()) return std::string();
    if (!it->is_string())
      return util::make_error(std::string("lease: spec.") + key + " is not a string");
    return it->get<std::string>();
  };
  auto num = [&](const char* key) -> util::Result<std::int64_t> {
    auto it = spec.find(key);
    if (it == spec.end() || it->is_null()) return std::int64_t{0};
    if (!it->is_number_integer()) {
      return util::make_error(std::string("lease: spec.") + key + " is not an integer");
    }
    return it->get<std::int64_t>();
  };
  TOLLGATE_TRY(holder, str("holderIdentity"));
  TOLLGATE_TRY(acquire, str("acquireTime"));
  TOLLGATE_TRY(renew, str("renewTime"));
  TOLLGATE_TRY(duration, num("leaseDurationSeconds"));
  TOLLGATE_TRY(transitions, num("leaseTransitions"));
  r.record = {holder, duration, acquire, renew, transitions};
  return r;
}

json lease_object(const std::string& ns, const std::string& name, const LeaseRecord& record,
                  const std::string& resource_version) {
  json meta = {{"name", name}, {"namespace", ns}};
  if (!resource_version.empty()) meta["resourceVersion"] = resource_version;
  return {{"apiVersion", "coordination.k8s.io/v1"},
          {"kind", "Lease"},
          {"metadata", meta},
          {"spec",
           {{"holderIdentity", record.holder},
            {"leaseDurationSeconds", record.lease_duration_seconds},
            {"acquireTime", record.acquire_time},
            {"renewTime", record.renew_time},
            {"leaseTransitions", record.transitions}}}};
}

std::optional<LeaseRecord> Elector::next(const std::optional<LeaseRecord>& lease,
                                         Steady::time_point now,
                                         std::chrono::system_clock::time_point wall) {
  const std::string stamp = micro_time(wall);
  LeaseRecord mine;
  mine.holder = config_.identity;
  mine.lease_duration_seconds =
      std::chrono::ceil<std::chrono::seconds>(config_.lease_duration).count();
  mine.renew_time = stamp;
  if (!lease) {
    mine.acquire_time = stamp;
    mine.transitions = 0;
    return mine;
  }
  // Expiry is judged by our own clock: from when we last saw the record change.
  if (!observed_ || !(*observed_ == *lease)) {
    observed_ = *lease;
    observed_at_ = now;
  }
  const bool held_by_other = !lease->holder.empty() && lease->holder != config_.identity;
  const auto duration =
      lease->lease_duration_seconds > 0
          ? std::chrono::milliseconds(std::chrono::seconds(lease->lease_duration_seconds))
          : config_.lease_duration;
  if (held_by_other && now < observed_at_ + duration) {
    expires_at_ = observed_at_ + duration;
    return std::nullopt;
  }
  if (lease->holder == config_.identity) {
    mine.acquire_time = lease->acquire_time;
    mine.transitions = lease->transitions;
  } else {
    mine.acquire_time = stamp;
    mine.transitions = lease->transitions + 1;
  }
  return mine;
}

std::optional<LeaseRecord> Elector::release(const LeaseRecord& lease,
                                            std::chrono::system_clock::time_point wall) const {
  if (lease.holder != config_.identity) return std::nullopt;
  LeaseRecord r = lease;
  r.holder.clear();
  r.lease_duration_seconds = 1;  // as client-go: the next candidate need not wait
  r.renew_time = micro_time(wall);
  return r;
}

}  // namespace tollgate::k8s
