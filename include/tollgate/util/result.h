// Result<T>: a value or an Error with a human-readable message, for fallible functions.
// Value type; no shared state, so as thread-safe as the T it holds.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace tollgate::util {

struct Error {
  std::string message;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

inline Error make_error(std::string message) { return Error{std::move(message)}; }

}  // namespace tollgate::util

// Propagates an error from an expression returning Result<T>; yields the value otherwise.
// `var` names a variable, it cannot be wrapped in parentheses.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define TOLLGATE_TRY(var, expr)                          \
  auto var##_result_ = (expr);                           \
  if (!var##_result_.ok()) return var##_result_.error(); \
  auto var = std::move(var##_result_).value()
// NOLINTEND(bugprone-macro-parentheses)
