#include "tollgate/app/leadership.h"

#include "tollgate/k8s/transport.h"
#include "tollgate/util/log.h"
#include "tollgate/util/metrics_text.h"

namespace tollgate::app {

Leadership::Leadership(k8s::ClusterConfig config, LeadershipOptions options)
    : config_(std::move(config)), options_(std::move(options)) {}

Leadership::~Leadership() { stop(); }

util::Status Leadership::start() {
  auto tokens = std::make_shared<k8s::TokenSource>(config_);
  TOLLGATE_TRY(writer_transport, k8s::make_transport(config_, tokens));
  writer_ = std::make_unique<status::StatusWriter>(options_.writer, std::move(writer_transport));
  if (options_.leader_elect) {
    TOLLGATE_TRY(leader_transport, k8s::make_transport(config_, tokens));
    k8s::LeaderOptions lo = options_.leader;
    lo.on_change = [w = writer_.get()](bool leading) { w->set_leading(leading); };
    leader_ = std::make_unique<k8s::LeaderLoop>(std::move(lo), std::move(leader_transport));
  } else {
    util::log_warn(
        "--leader-elect=false: this replica writes status and Events on its own; run one replica "
        "only",
        {});
    writer_->set_leading(true);
  }
  writer_thread_ = std::thread([this] {
    auto failure = util::run_catching([this] { writer_->run(); });
    if (!failure && !writer_->stopped()) failure = "the status writer returned before stop()";
    if (failure) util::report_thread_failure(options_.failures, "status writer", *failure);
  });
  if (leader_) {
    leader_thread_ = std::thread([this] {
      auto failure = util::run_catching([this] { leader_->run(); });
      if (!failure && !leader_->stopped()) failure = "the election loop returned before stop()";
      if (failure) util::report_thread_failure(options_.failures, "leader election", *failure);
    });
  }
  return util::ok();
}

void Leadership::stop() {
  if (leader_) {
    leader_->stop();  // demotes (the writer stops writing), then releases the Lease
    if (leader_thread_.joinable()) leader_thread_.join();
  }
  if (writer_) {
    writer_->stop();
    if (writer_thread_.joinable()) writer_thread_.join();
  }
}

void Leadership::submit(const index::Event& e) {
  if (writer_) writer_->submit(e);
}

std::string Leadership::metrics() const {
  std::string out;
  if (leader_) {
    util::append_metric_header(out, "tollgate_leader", "gauge",
                               "1 while this replica holds the Lease (writes status), else 0.");
    out += "tollgate_leader " + std::string(leader_->leading() ? "1" : "0") + "\n";
    util::append_metric_header(out, "tollgate_leader_transitions_total", "counter",
                               "Times this replica became the leader.");
    out += "tollgate_leader_transitions_total " + std::to_string(leader_->transitions()) + "\n";
    util::append_metric_header(out, "tollgate_lease_failures_total", "counter",
                               "Lease reads and writes that failed.");
    out += "tollgate_lease_failures_total " + std::to_string(leader_->failures()) + "\n";
  }
  if (writer_) out += writer_->metrics();
  return out;
}

}  // namespace tollgate::app
