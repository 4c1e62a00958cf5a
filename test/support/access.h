// The controller's access control (server::Access) reviewing with a fake API server's
// TokenReview and SubjectAccessReview, for the tests that serve with --auth kubernetes.
#pragma once

#include <catch2/catch.hpp>
#include <memory>

#include "support/fake_apiserver.h"
#include "tollgate/k8s/config.h"
#include "tollgate/k8s/transport.h"
#include "tollgate/server/access.h"

namespace tollgate::testing {

inline std::shared_ptr<server::Access> access_for(FakeApiServer& api,
                                                  auth::ReviewerOptions options = {}) {
  k8s::ClusterConfig c;
  c.server = api.url();
  auto config = k8s::parse_server(c);
  REQUIRE(config.ok());
  auto reviewer = std::make_shared<auth::Reviewer>(
      [config = *config] { return k8s::make_transport(config, nullptr); }, options);
  return std::make_shared<server::Access>(std::move(reviewer));
}

}  // namespace tollgate::testing
