// Result<T>: a value or an Error with a human-readable message, for fallible functions;
// Status (= Result<void>): success or an Error, for fallible functions with nothing to return.
// Value types; no shared state, so as thread-safe as the T they hold.
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

// Success or an Error. `Status s = util::ok();` / `return util::make_error("...");`.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error)
      : error_(std::move(error)), failed_(true) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return error_; }

 private:
  Error error_;
  bool failed_ = false;
};

using Status = Result<void>;

inline Status ok() { return {}; }

inline Error make_error(std::string message) { return Error{std::move(message)}; }

}  // namespace tollgate::util

// Propagates an error from an expression returning Result<T>; yields the value otherwise.
// `var` names a variable, it cannot be wrapped in parentheses.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define TOLLGATE_TRY(var, expr)                          \
  auto var##_result_ = (expr);                           \
  if (!var##_result_.ok()) return var##_result_.error(); \
  auto var = std::move(var##_result_).value()

// Propagates an error from an expression returning Status (or any Result whose value the
// caller does not need); binds no name. (Its variable is numbered, so that a TRY inside a
// lambda inside another TRY's expression does not shadow the outer one.)
#define TOLLGATE_TRY_STATUS(expr) \
  TOLLGATE_TRY_STATUS_AS(expr, TOLLGATE_CONCAT(tollgate_s_, __COUNTER__))
#define TOLLGATE_TRY_STATUS_AS(expr, s)             \
  do {                                              \
    if (auto s = (expr); !s.ok()) return s.error(); \
  } while (false)
#define TOLLGATE_CONCAT(a, b) TOLLGATE_CONCAT_(a, b)
#define TOLLGATE_CONCAT_(a, b) a##b
// NOLINTEND(bugprone-macro-parentheses)
