// What explain.cc shares with the matcher in evaluate.cc (eval module internals).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tollgate/compile/table.h"
#include "tollgate/eval/request.h"

namespace tollgate::eval::detail {

// The value of request header `name` (lower case), or null.
const std::string* header(const PreparedRequest& r, std::string_view name);
// Does any of the predicate's values match the request? (Before `negate` is applied.)
// `jwt_visible`: false at the CUSTOM stage, which sees no JWT data.
bool some_value_matches(const compile::Predicate& p, const PreparedRequest& r, bool jwt_visible);
// Does one conjunction of a rule's side (principals or permissions) match?
bool side_matches(const std::vector<compile::Conjunction>& side, const PreparedRequest& r,
                  bool jwt_visible);

}  // namespace tollgate::eval::detail
