#include "tollgate/util/time.h"

#include <array>
#include <cstdio>
#include <ctime>

namespace tollgate::util {

std::string rfc3339(std::chrono::system_clock::time_point t) {
  const auto ms = std::chrono::floor<std::chrono::milliseconds>(t).time_since_epoch().count();
  const auto secs = static_cast<std::time_t>(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  // Every table answer and log line carries a time: the formatted second is kept per thread.
  thread_local std::time_t cached_secs = -1;
  thread_local std::array<char, 40> cached{};  // "YYYY-MM-DDTHH:MM:SS."
  thread_local int cached_len = 0;
  if (secs != cached_secs || cached_len <= 0) {
    std::tm tm{};
    gmtime_r(&secs, &tm);
    cached_len = std::snprintf(cached.data(), cached.size(), "%04d-%02d-%02dT%02d:%02d:%02d.",
                               tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                               tm.tm_sec);
    cached_secs = secs;
  }
  const int milli = static_cast<int>(ms - static_cast<long long>(secs) * 1000);
  std::string out(cached.data(), static_cast<std::size_t>(cached_len));
  out += static_cast<char>('0' + milli / 100);
  out += static_cast<char>('0' + milli / 10 % 10);
  out += static_cast<char>('0' + milli % 10);
  out += 'Z';
  return out;
}

}  // namespace tollgate::util
