#include "tollgate/k8s/leader.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "tollgate/util/log.h"

namespace tollgate::k8s {

using nlohmann::json;
using Steady = std::chrono::steady_clock;

LeaderLoop::LeaderLoop(LeaderOptions options, std::unique_ptr<Transport> transport)
    : options_(std::move(options)), transport_(std::move(transport)), elector_(options_.election) {}

LeaderLoop::~LeaderLoop() { stop(); }

std::string LeaderLoop::lease_path() const {
  return "/apis/coordination.k8s.io/v1/namespaces/" + options_.lease_namespace + "/leases";
}

void LeaderLoop::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
}

util::Result<std::optional<ReadLease>> LeaderLoop::read() {
  Call call;
  call.target = lease_path() + "/" + options_.lease_name;
  call.timeout = std::max(std::chrono::milliseconds(1000), options_.election.renew_deadline / 2);
  TOLLGATE_TRY(r, transport_->send(call));
  if (r.status == 404) return std::optional<ReadLease>();
  if (r.status != 200) {
    return util::make_error("reading the Lease: HTTP " + std::to_string(r.status));
  }
  const json object = json::parse(r.body, nullptr, false);
  TOLLGATE_TRY(lease, parse_lease(object));
  return std::optional<ReadLease>(std::move(lease));
}

bool LeaderLoop::write(const LeaseRecord& record, const std::string& resource_version) {
  Call call;
  call.method = resource_version.empty() ? "POST" : "PUT";
  call.target = lease_path();
  if (!resource_version.empty()) call.target += "/" + options_.lease_name;
  call.timeout = std::max(std::chrono::milliseconds(1000), options_.election.renew_deadline / 2);
  call.body =
      lease_object(options_.lease_namespace, options_.lease_name, record, resource_version).dump();
  auto r = transport_->send(call);
  if (r.ok() && (r->status == 200 || r->status == 201)) return true;
  ++failures_;
  if (!r.ok() || r->status != 409) {  // a 409 is another candidate's write: no news
    util::log_warn(
        "the Lease could not be written",
        {{"lease", options_.lease_namespace + "/" + options_.lease_name}, {"error", describe(r)}});
  }
  return false;
}

void LeaderLoop::set_leading(bool leading) {
  if (leading_ == leading) return;
  leading_ = leading;
  if (leading) ++transitions_;
  util::log_info(leading ? "leader election: became the leader" : "leader election: demoted",
                 {{"identity", options_.election.identity},
                  {"lease", options_.lease_namespace + "/" + options_.lease_name}});
  if (options_.on_change) options_.on_change(leading);
}

LeaderLoop::Step LeaderLoop::attempt() {
  const auto now = Steady::now();
  auto lease = read();
  Step step = Step::kWait;
  if (!lease.ok()) {
    ++failures_;
    // Said once per outage, not every retry period; tollgate_lease_failures_total counts.
    if (!read_failing_)
      util::log_warn("the Lease could not be read", {{"error", lease.error().message}});
    read_failing_ = true;
  } else {
    if (read_failing_) util::log_info("the Lease can be read again", {});
    read_failing_ = false;
    const std::optional<ReadLease>& current = *lease;
    if (current && !current->record.holder.empty() &&
        current->record.holder != options_.election.identity) {
      elector_.lost();  // another replica holds it: stop writing at once
    }
    auto mine = elector_.next(current ? std::optional<LeaseRecord>(current->record) : std::nullopt,
                              now, std::chrono::system_clock::now());
    if (mine) {
      if (write(*mine, current ? current->resource_version : std::string())) {
        elector_.renewed(now);
      } else {
        step = Step::kAgain;  // read again soon: someone else wrote it
      }
    }
  }
  set_leading(elector_.leading(Steady::now()));
  return step;
}

void LeaderLoop::release() {
  auto lease = read();
  if (!lease.ok() || !lease->has_value()) return;
  const ReadLease& current = **lease;
  auto released = elector_.release(current.record, std::chrono::system_clock::now());
  if (!released) return;
  if (write(*released, current.resource_version)) {
    util::log_info("leader election: released the Lease",
                   {{"lease", options_.lease_namespace + "/" + options_.lease_name}});
  }
}

void LeaderLoop::run() {
  const auto retry = options_.election.retry_period;
  while (!stopping_) {
    const Step step = attempt();
    auto wait = step == Step::kAgain ? std::min(retry, std::chrono::milliseconds(200)) : retry;
    if (!leading_) {
      // A candidate tries again as soon as another holder's lease expires.
      const auto until_expiry = elector_.expires_at() - Steady::now();
      if (until_expiry > Steady::duration::zero() && until_expiry < wait) {
        wait = std::chrono::ceil<std::chrono::milliseconds>(until_expiry);
      }
    }
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, wait, [this] { return stopping_.load(); });
  }
  if (leading_) {
    set_leading(false);  // the writers stop first
    release();
  }
}

}  // namespace tollgate::k8s
