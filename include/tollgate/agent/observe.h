// What happens after every decision, whichever protocol asked (HTTP or gRPC): the metrics,
// an info log line for each denial (source, principal, method, path, deciding policy and
// rule, as Linkerd logs "request denied"), and the decision log when one is configured.
// Thread-safe.
#pragma once

#include <chrono>

#include "tollgate/agent/authorizer.h"
#include "tollgate/agent/decision_log.h"
#include "tollgate/agent/metrics.h"
#include "tollgate/eval/request.h"

namespace tollgate::agent {

class DecisionObserver {
 public:
  // Each must outlive the observer; `log` may be null.
  DecisionObserver(AgentMetrics& metrics, const Authorizer& authorizer, DecisionLog* log)
      : metrics_(metrics), authorizer_(authorizer), log_(log) {}

  // `request` is null when the request could not be read (the answer is a refusal).
  void observe(const eval::Request* request, const Answer& answer,
               std::chrono::nanoseconds elapsed) const;

 private:
  AgentMetrics& metrics_;
  const Authorizer& authorizer_;
  DecisionLog* log_;
};

}  // namespace tollgate::agent
